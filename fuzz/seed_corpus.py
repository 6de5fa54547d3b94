#!/usr/bin/env python3
"""Write the gunicorn request corpus, decoded, as seeds for the `request` fuzz target.

Usage: python3 fuzz/seed_corpus.py [CONFORMANCE_DIR]   (default: ../shared/conformance)

Each seed is one split byte followed by the raw request (the target's input
format); every request is written with three split bytes (start, middle, end),
so the fuzzer starts from inputs that already split heads and bodies.
Seeds go to fuzz/corpus/request/, which is git-ignored.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "conformance"))


def main():
    conformance = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "conformance")
    sys.path.insert(0, conformance)
    from run import decode  # the corpus's own decoder, so seeds match what run.py sends

    corpus = os.path.join(conformance, "gunicorn-requests")
    out_dir = os.path.join(HERE, "corpus", "request")
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for kind in ("valid", "invalid"):
        folder = os.path.join(corpus, kind)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".http"):
                continue
            with open(os.path.join(folder, name), "rb") as f:
                data = decode(f.read())
            for split in (0x00, 0x80, 0xFF):
                seed = f"gunicorn-{kind}-{name[:-5]}-{split:02x}"
                with open(os.path.join(out_dir, seed), "wb") as f:
                    f.write(bytes([split]) + data)
                written += 1
    print(f"wrote {written} seeds to {out_dir}")


if __name__ == "__main__":
    main()
