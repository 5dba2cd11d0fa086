//! The codec and hashing paths a transfer goes through for every MiB:
//! framing a data payload, decoding it without a copy, and hashing it with
//! the checkpoint chain. `cargo bench -p ft-protocol`.

// Bench code: a failed expectation is a broken bench.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ft_protocol::codec::{data_header, decode_request, decode_response, encode, LEN_PREFIX};
use ft_protocol::{ChainHasher, Entry, EntryKind, Request, Response, CHUNK_SIZE, MAX_DATA};
use sha2::Digest as _;

fn codec(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x5au8; MAX_DATA]);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(MAX_DATA as u64));
    group.bench_function("data header (send side, 1 MiB frame)", |b| {
        b.iter(|| data_header(black_box(MAX_DATA)).unwrap())
    });
    let mut frame = data_header(MAX_DATA).unwrap().to_vec();
    frame.extend_from_slice(&payload);
    let body = Bytes::from(frame).slice(LEN_PREFIX..);
    group.bench_function("decode data frame (receive side, 1 MiB, no copy)", |b| {
        b.iter(|| decode_response(black_box(body.clone())).unwrap())
    });
    group.bench_function("encode data frame through bincode (1 MiB, copies)", |b| {
        b.iter(|| encode(&Response::Data(black_box(payload.clone()))).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("requests");
    let get = encode(&Request::Get {
        path: "datasets/run-42/part-00017.parquet".into(),
        offset: 1 << 30,
    })
    .unwrap();
    group.bench_function("decode Get", |b| {
        b.iter(|| decode_request(black_box(&get[LEN_PREFIX..])).unwrap())
    });
    let entries: Vec<Entry> = (0..1000)
        .map(|i| Entry {
            path: format!("d{:02}/f{i:04}.bin", i % 50),
            kind: EntryKind::File,
            size: 4096,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 0,
            sha256: Some([7; 32]),
        })
        .collect();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("encode 1,000 listing entries", |b| {
        b.iter_batched(
            || Response::Entries(entries.clone()),
            |r| encode(&r).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let listing = encode(&Response::Entries(entries)).unwrap();
    let listing = Bytes::from(listing).slice(LEN_PREFIX..);
    group.bench_function("decode 1,000 listing entries", |b| {
        b.iter(|| decode_response(black_box(listing.clone())).unwrap())
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let chunk = vec![0xa5u8; CHUNK_SIZE as usize];
    let mut group = c.benchmark_group("hashing");
    group.throughput(Throughput::Bytes(CHUNK_SIZE));
    group.bench_function("ChainHasher: 4 MiB chunk and its checkpoint", |b| {
        b.iter(|| {
            let mut hasher = ChainHasher::new();
            for piece in chunk.chunks(MAX_DATA) {
                hasher.update(black_box(piece));
            }
            hasher.state().unwrap()
        })
    });
    group.bench_function("sha2::Sha256: 4 MiB (reference)", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(&chunk)))
    });
    group.finish();
}

criterion_group!(benches, codec, hashing);
criterion_main!(benches);
