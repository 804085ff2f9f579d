#!/usr/bin/env bash
# Regenerates the pictures and tables of docs/inside.md (and docs/explore.png in README) from a demo run.
#
#   bash docs/make_pictures.sh [RUN] [CLASSIFIER]
#
# RUN (default runs/demo): the demo's workdir; trained here first if it holds no export yet.
# CLASSIFIER (default runs/classifiers/mnist/classifier.keras): the project's MNIST classifier, made by
#   python -m dcgan_tf.main --mode=train_classifier --dataset=mnist --data_dir=<MNIST IDX files> \
#     --workdir=runs/classifiers/mnist
# Needs the explore extra and Debian's chromium and chromium-driver for the screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/demo}
CLASSIFIER=${2:-runs/classifiers/mnist/classifier.keras}

# 1. The demo run (about 4 minutes on 2 CPU cores).
if [ ! -f "$RUN/saved_model/saved_model.pb" ]; then
  python -m dcgan_tf.main --flagfile=configs/demo.cfg --workdir="$RUN"
fi

# 2. --mode=summary: the demo's layers (from its flags: the same model as the run's config.cfg), and the
#    paper's 64x64 model.
python -m dcgan_tf.main --flagfile=configs/demo.cfg --mode=summary > docs/summary_demo.txt
python -m dcgan_tf.main --flagfile=configs/bench64.cfg --mode=summary > docs/summary_bench64.txt

# 3. --mode=visualize: D's features beside a random D's, and the memorisation check over 1,000 samples.
python -m dcgan_tf.main --mode=visualize --workdir="$RUN" --out_dir=docs/visualize --num=1000 \
  --classifier_path="$CLASSIFIER"

# 4. --mode=explore: the browser test on the demo's export, its screenshot kept for README.
DCGAN_TF_EXPLORE_SAVED_MODEL="$RUN/saved_model" DCGAN_TF_EXPLORE_SCREENSHOT=docs/explore.png \
  python -m pytest -q -p no:cacheprovider tests/test_explore_browser.py
