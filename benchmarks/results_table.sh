#!/usr/bin/env bash
# Reproduces the results table of docs/quality.md on MNIST and Fashion-MNIST:
# feature classifiers, two short GAN runs, FID/KID/score/coverage of trained G, real held-out data (the
# floor) and an untrained G (the ceiling), and the discriminator-feature probe. About two hours on 2 CPU
# cores, most of it the all-labels probe (liblinear on 59,000 x 1,536 features, 4 values of C, twice).
#
#   MNIST_DIR=... FASHION_DIR=... bash benchmarks/results_table.sh [OUT_DIR]   (default runs/results;
#   each DIR holds the four IDX files; Fashion-MNIST defaults to Debian's dataset-fashion-mnist)
set -euo pipefail
OUT=${1:-runs/results}
MNIST_DIR=${MNIST_DIR:-mnist_idx}
FASHION_DIR=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
# Modest sample counts: CPU time is scarce here. Papers use 50,000 generated images.
SAMPLES=${SAMPLES:-5000}
RUN="python -m dcgan_tf.main"

python benchmarks/classifier_accuracy.py --mnist_dir="$MNIST_DIR" --fashion_dir="$FASHION_DIR" --out_dir="$OUT/classifiers"

for DATASET in mnist fashion_mnist; do
  if [ "$DATASET" = mnist ]; then DIR=$MNIST_DIR; else DIR=$FASHION_DIR; fi
  DATA="--dataset=$DATASET --data_dir=$DIR"
  GAN="$OUT/gan_$DATASET"
  # A short run of the paper's DCGAN at half width (gf_dim = df_dim = 32), batch 64, 2,000 steps.
  $RUN $DATA --workdir="$GAN" --train_steps=2000 --batch_size=64 --gf_dim=32 --df_dim=32 \
    --log_every=100 --sample_every=500 --checkpoint_every=500
  EVAL="--mode=evaluate $DATA --feature_net=$DATASET --classifier_path=$OUT/classifiers/$DATASET/classifier.keras \
    --eval_samples=$SAMPLES --eval_real_split=test --seed=0"
  $RUN $EVAL --workdir="$GAN" --eval_source=generator | grep '^{' >"$OUT/eval_${DATASET}_trained.json"
  $RUN $EVAL --eval_source=real | grep '^{' >"$OUT/eval_${DATASET}_real.json"
  $RUN $EVAL --eval_source=untrained --gf_dim=32 | grep '^{' >"$OUT/eval_${DATASET}_untrained.json"
  $RUN --mode=probe $DATA --workdir="$GAN" --probe_labels_per_class=10,100,all \
    | grep '^{' >"$OUT/probe_${DATASET}.json"
done
