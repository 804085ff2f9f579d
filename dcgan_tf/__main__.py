"""`python -m dcgan_tf`: the command line of dcgan_tf.main."""

from dcgan_tf.main import run

run()
