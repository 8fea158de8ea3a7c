"""model2vec's own students of a sentence encoder, for bench/text.py's comparison rows.

Runs in a separate virtual environment (bench/text.py builds it: model2vec[distill] 0.10 pins
transformers below 5.4, and tokenlearn brings its own dependencies), never imported by kdistill:

    python bench/model2vec_students.py --teacher FOLDER --texts glosses.txt --widths 64 256 --out DIR

For each width: ``model2vec.distill`` of the teacher, then ``tokenlearn``'s training on the same
unlabelled texts the kdistill students learn from, as tokenlearn's own command line does it
(``python -m tokenlearn.train``: a vocabulary of the corpus' most frequent words added, distil
with that vocabulary and PCA to the width, then fit the token vectors to the teacher's mean token
embeddings of each text, PCA'd to the width, with early stopping on a tenth of the texts).
tokenlearn's ``featurize`` step (the teacher's mean token embeddings of each text) is called as a
function on the texts, since its command line reads only hub datasets. Writes ``DIR/w{width}/``,
a folder ``model2vec.StaticModel.from_pretrained`` loads, and ``DIR/w{width}/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def featurize(teacher: str, texts: list[str], out: Path) -> None:
    """tokenlearn's features of ``texts``: the teacher's token embeddings, mean over the text's own
    tokens (tokenlearn.featurize.featurize), in ``out``."""
    from sentence_transformers import SentenceTransformer
    from tokenlearn.featurize import featurize as tokenlearn_featurize

    if (out / "done").exists():
        return
    model = SentenceTransformer(teacher, device="cpu")
    tokenlearn_featurize(iter({"text": t} for t in texts), model, str(out), max_means=len(texts) + 1,
                         batch_size=32, text_key="text")
    (out / "done").write_text("")


def train(teacher: str, features: Path, width: int, out: Path) -> dict:
    """``python -m tokenlearn.train`` at ``width``, into ``out``."""
    started = time.time()
    subprocess.run([sys.executable, "-m", "tokenlearn.train", "--model-name", teacher, "--data-path", str(features),
                    "--save-path", str(out), "--pca-dims", str(width), "--device", "cpu"], check=True)
    return {"width": width, "train_s": time.time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the sentence-transformers teacher's folder")
    parser.add_argument("--texts", type=Path, required=True, help="the unlabelled texts, one a line")
    parser.add_argument("--widths", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    texts = [line for line in args.texts.read_text().splitlines() if line.strip()]
    started = time.time()
    featurize(args.teacher, texts, args.out / "features")
    featurize_s = time.time() - started
    for width in args.widths:
        folder = args.out / f"w{width}"
        if (folder / "bench.json").exists():  # resumable: a finished width is kept
            continue
        info = train(args.teacher, args.out / "features", width, folder)
        (folder / "bench.json").write_text(json.dumps({**info, "texts": len(texts), "featurize_s": featurize_s}))


if __name__ == "__main__":
    main()
