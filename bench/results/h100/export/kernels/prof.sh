#!/bin/bash
set -u
python3 tools/paper_model_files.py --dir /tmp/pm --only bert-base-qqp,resnet18-cifar10 | tail -2
for g in auto off; do
python3 tools/kernel_profile.py /tmp/pm/bert-base-qqp.b64.safetensors --tree old=.gpu/old --tree new=. --precision fp16 --batch 16 --graph $g --out /tmp/res/prof-bert-group-$g.json | head -30
python3 tools/kernel_profile.py /tmp/pm/bert-base-qqp.b64.safetensors --path dense --tree old=.gpu/old --tree new=. --precision fp16 --batch 16 --graph $g --out /tmp/res/prof-bert-dense-$g.json | head -12
python3 tools/kernel_profile.py /tmp/pm/resnet18-cifar10.b64.safetensors --path dense --tree old=.gpu/old --tree new=. --precision fp16 --batch 16 --graph $g --out /tmp/res/prof-r18c-dense-$g.json | head -30
done
