"""What bounds a static student's speed: the teacher, its tokenizer alone, kdistill's static
student and model2vec's, timed in interleaved rounds in one process (after bench/text.py --part
static, whose runs it reads).

    python bench/static_ceiling.py [--width 256]

Sentences a second at batch 32 on 1,024 WordNet glosses (a seeded sample), tokenisation included
(the tokenizer row: the teacher's fast tokenizer alone, no special tokens, as the static
encoders call it), and each as a multiple of the teacher's. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from model2vec import StaticModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from kdistill.data.text import load_wordnet
    from kdistill.models.hf import hf_encoder
    from kdistill.models.static import StaticEncoder
    from text import interleaved_speeds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--runs", type=Path, default=HERE / "results" / "runs")
    args = parser.parse_args()
    texts = random.Random(0).sample(load_wordnet(None, "noun").texts, 1024)
    folder = args.runs / f"minilm-to-static-{args.width}" / "student_static"
    vectors = load_file(folder / "model.safetensors")["embeddings"]
    ours = StaticEncoder(vectors, AutoTokenizer.from_pretrained(folder), (vectors.abs().sum(1) > 0).float())
    m2v_folder = next((args.runs / "model2vec").glob(f"*/w{args.width}"))
    m2v = StaticModel.from_pretrained(str(m2v_folder))
    teacher = hf_encoder(path="all-MiniLM-L6-v2", max_length=64).eval()
    tokenizer = ours._backend()
    speeds = interleaved_speeds({
        "teacher (all-MiniLM-L6-v2)": lambda b: teacher.encode(b, batch_size=32),
        "the teacher's tokenizer alone": lambda b: tokenizer.encode_batch_fast(b, add_special_tokens=False),
        f"kdistill static {args.width}": lambda b: ours.encode(b, batch_size=32),
        f"model2vec {args.width}": lambda b: m2v.encode(b),
    }, texts)
    base = next(iter(speeds.values()))
    print("| model | sentences/s | x teacher |\n|---|---:|---:|")
    for name, value in speeds.items():
        print(f"| {name} | {value:.0f} | {value / base:.0f}x |")


if __name__ == "__main__":
    main()
