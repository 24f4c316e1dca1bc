#!/usr/bin/env python3
"""Writes the ImageNet class-name lists bundled with asl-tresnet, from the `timm` PyPI package.

Source: timm/data/_info/{imagenet_synsets.txt, imagenet21k_miil_synsets.txt,
imagenet_synset_to_lemma.txt} (pytorch-image-models, Ross Wightman, Apache-2.0; the lemmas are
WordNet's). Output, one class per line in model output order, `synset<TAB>lemma`:
  imagenet1k.tsv      1000 classes (timm's ImageNet-1k order)
  imagenet21k_p.tsv   11221 classes (ImageNet-21K-P, MIIL fall11 subset: timm's *.miil_in21k heads)

Usage: python gen_imagenet_classes.py   (needs timm installed)
"""
import os

import timm

INFO = os.path.join(os.path.dirname(timm.__file__), "data", "_info")
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with open(os.path.join(INFO, "imagenet_synset_to_lemma.txt")) as f:
        lemma = dict(line.rstrip("\n").split("\t", 1) for line in f)
    for src, dst, count in [("imagenet_synsets.txt", "imagenet1k.tsv", 1000),
                            ("imagenet21k_miil_synsets.txt", "imagenet21k_p.tsv", 11221)]:
        with open(os.path.join(INFO, src)) as f:
            synsets = [line.strip() for line in f if line.strip()]
        assert len(synsets) == count, (src, len(synsets))
        with open(os.path.join(HERE, dst), "w") as f:
            for s in synsets:
                f.write(f"{s}\t{lemma[s]}\n")
        print(f"{dst}: {len(synsets)} classes (timm {timm.__version__})")


if __name__ == "__main__":
    main()
