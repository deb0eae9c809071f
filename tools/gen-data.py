#!/usr/bin/env python3
"""Deterministic synthetic data for the bkfs benchmarks.

usage: gen-data.py small DIR [--files N] [--seed S]
       gen-data.py blob FILE [--mib M] [--seed S]

small: N files of 0-16 KiB in a three-level tree of directories.  Content mix:
       ~5% empty, ~55% text-like (compressible), ~25% random (incompressible),
       ~15% exact duplicates of an earlier file.  Modes and mtimes are fixed,
       so two runs with the same seed give byte-identical trees.
blob:  one file of M MiB, semi-compressible: 64 KiB blocks that alternate
       between random bytes and text-like bytes.

Only the standard library; the same seed always gives the same bytes
(random.Random is specified to be reproducible across platforms).
"""
import argparse
import os
import random
import sys

WORDS = (
    "the of and to in is for on that with by this be are from or as at it an "
    "file data block chunk snapshot store index pack tree node inode mode size "
    "time error return struct static const void int unsigned long char buffer "
    "offset length read write open close sync flush lock unlock page cache "
    "device driver kernel module config option value key name path list "
    "hash table entry count total first last next prev head tail begin end"
).split()

BASE_MTIME = 1_700_000_000  # fixed, so the tree is reproducible


def make_corpus(rng, size):
    """A buffer of pseudo-text: words, punctuation and line breaks."""
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(3, 14)))
        line += rng.choice((".\n", ";\n", ",\n", "\n", " {\n", "}\n"))
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def text_bytes(rng, corpus, n):
    """n bytes of text: two slices of the corpus at random offsets."""
    if n == 0:
        return b""
    half = n // 2
    a = rng.randrange(0, len(corpus) - half)
    b = rng.randrange(0, len(corpus) - (n - half))
    return corpus[a:a + half] + corpus[b:b + n - half]


def gen_small(root, nfiles, seed):
    rng = random.Random(seed)
    corpus = make_corpus(rng, 8 << 20)
    os.makedirs(root, exist_ok=False)
    # 10 x 10 x 10 leaf directories, files spread evenly across them.
    leaves = []
    for a in range(10):
        for b in range(10):
            for c in range(10):
                d = os.path.join(root, f"d{a}", f"e{b}", f"f{c}")
                os.makedirs(d)
                leaves.append(d)
    pool = []  # contents that duplicates are drawn from
    total = 0
    counts = {"empty": 0, "text": 0, "random": 0, "dup": 0}
    for i in range(nfiles):
        r = rng.random()
        if rng.random() < 0.5:
            size = rng.randint(0, 16384)
        else:
            size = int(2 ** rng.uniform(0, 14))
        if r < 0.05:
            kind, data = "empty", b""
        elif r < 0.60:
            kind, data = "text", text_bytes(rng, corpus, size)
        elif r < 0.85:
            kind, data = "random", rng.randbytes(size)
        elif pool:
            kind, data = "dup", rng.choice(pool)
        else:
            kind, data = "text", text_bytes(rng, corpus, size)
        if kind in ("text", "random") and len(pool) < 2000 and rng.random() < 0.1:
            pool.append(data)
        counts[kind] += 1
        leaf = leaves[i % len(leaves)]
        ext = ".bin" if kind == "random" else ".txt"
        path = os.path.join(leaf, f"file{i:06d}{ext}")
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o755 if i % 17 == 0 else 0o644)
        t = BASE_MTIME + i
        os.utime(path, (t, t))
        total += len(data)
    print(f"small: {nfiles} files, {total} bytes, {counts}", file=sys.stderr)


def gen_blob(path, mib, seed):
    rng = random.Random(seed)
    corpus = make_corpus(rng, 4 << 20)
    block = 64 << 10
    with open(path + ".tmp", "wb") as f:
        for i in range(mib * (1 << 20) // block):
            if i % 2 == 0:
                f.write(rng.randbytes(block))
            else:
                f.write(text_bytes(rng, corpus, block))
    os.utime(path + ".tmp", (BASE_MTIME, BASE_MTIME))
    os.rename(path + ".tmp", path)
    print(f"blob: {path}, {mib} MiB", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("small", "blob"))
    p.add_argument("path")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--mib", type=int, default=50)
    p.add_argument("--seed", type=int, default=20261122)
    a = p.parse_args()
    if a.what == "small":
        gen_small(a.path, a.files, a.seed)
    else:
        gen_blob(a.path, a.mib, a.seed)


if __name__ == "__main__":
    main()
