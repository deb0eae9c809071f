//! Micro-benchmarks of the store's hot paths: chunking, hashing, compression
//! and index look-ups. Run: `cargo bench --bench store`.

use std::hint::black_box;

use bkfs::store::chunker::Chunker;
use bkfs::store::config::ChunkerParams;
use bkfs::store::pack::BlobKind;
use bkfs::store::testdata::pseudo_random;
use bkfs::store::{Id, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Text-like data: source code compresses about 4-5x, like a kernel tree.
fn text_like(n: usize) -> Vec<u8> {
    let words = [
        "static ",
        "int ",
        "return ",
        "struct ",
        "if (",
        ") {\n",
        "}\n",
        "void ",
        "unsigned ",
        "long ",
        "const ",
        "char *",
        "->",
        " = ",
        ";\n",
        "\t",
        "#include <linux/",
        ".h>\n",
        "/* ",
        " */\n",
    ];
    let noise = pseudo_random(n, 11);
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(words[noise[i % n] as usize % words.len()].as_bytes());
        if noise[(i * 7) % n] < 40 {
            out.extend_from_slice(format!("x{}", noise[(i * 13) % n]).as_bytes());
        }
        i += 1;
    }
    out.truncate(n);
    out
}

fn chunking(c: &mut Criterion) {
    let data = pseudo_random(64 << 20, 1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc 512K/1M/8M", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&data[..], ChunkerParams::default());
            let mut n = 0;
            while let Some(c) = ch.next_chunk().unwrap() {
                n += c.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("hashing");
    for size in [4 << 10, 1 << 20, 8 << 20] {
        let data = pseudo_random(size, 2);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("blake3", size), &data, |b, d| {
            b.iter(|| black_box(Id::of_large(d)))
        });
    }
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    let text = text_like(1 << 20);
    let noise = pseudo_random(1 << 20, 3);
    g.throughput(Throughput::Bytes(1 << 20));
    for level in [1, 3] {
        g.bench_with_input(BenchmarkId::new("zstd text", level), &text, |b, d| {
            b.iter(|| black_box(zstd::bulk::compress(d, level).unwrap()))
        });
    }
    g.bench_with_input(BenchmarkId::new("zstd random", 3), &noise, |b, d| {
        b.iter(|| black_box(zstd::bulk::compress(d, 3).unwrap()))
    });
    let packed = zstd::bulk::compress(&text, 3).unwrap();
    g.bench_function("unzstd text", |b| {
        b.iter(|| black_box(zstd::bulk::decompress(&packed, 1 << 20).unwrap()))
    });
    g.finish();
}

fn index_lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("s")).unwrap();
    let mut ids = Vec::new();
    // Four sessions, four index files of 25,000 small blobs each.
    for s in 0..4u64 {
        let mut w = store.writer("bench").unwrap();
        for i in 0..25_000u64 {
            let blob = (s * 1_000_000 + i).to_le_bytes();
            ids.push(w.put(BlobKind::Data, &blob).unwrap());
        }
        w.commit(None).unwrap();
    }
    let reader = store.reader().unwrap();
    let absent: Vec<Id> = (0..1000u64)
        .map(|i| Id::of(&(u64::MAX - i).to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 hits in 100k entries", |b| {
        b.iter(|| {
            for id in ids.iter().step_by(100) {
                black_box(reader.index().get(id).unwrap());
            }
        })
    });
    g.bench_function("1000 misses in 100k entries", |b| {
        b.iter(|| {
            for id in &absent {
                black_box(reader.index().get(id));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, chunking, hashing, compression, index_lookups);
criterion_main!(benches);
