//! The download sink, fed from memory: how fast ftget can write and verify
//! what arrives, with one hashing thread and with one per core. SHA-256 is
//! sequential, so one thread caps a download at one core's hashing speed;
//! checking chunks against the server's checkpoints on several threads
//! lifts that cap. `cargo bench -p ft-client`.

// Bench code: a failed expectation is a broken bench.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ft_protocol::{ChainHasher, Response, CHUNK_SIZE, MAX_DATA};

/// 256 MiB: 64 chunks, enough for the threads to settle into their turns.
const SIZE: usize = 256 << 20;

/// What an honest server sends for `data`: 1 MiB frames, a checkpoint after
/// every chunk, the digest at the end.
fn honest(data: &Bytes) -> Vec<Response> {
    let mut hasher = ChainHasher::new();
    let mut out = Vec::new();
    for start in (0..data.len()).step_by(MAX_DATA) {
        let piece = data.slice(start..(start + MAX_DATA).min(data.len()));
        hasher.update(&piece);
        let end = (start + piece.len()) as u64;
        out.push(Response::Data(piece));
        if end.is_multiple_of(CHUNK_SIZE) {
            out.push(Response::Checkpoint {
                index: end / CHUNK_SIZE,
                state: hasher.state().unwrap(),
            });
        }
    }
    out.push(Response::End {
        sha256: hasher.finalize(),
    });
    out
}

fn sink(c: &mut Criterion) {
    let data = Bytes::from((0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let stream = honest(&data);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Into memory (a tmpfs where there is one): this measures the sink, not
    // the disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let mut group = c.benchmark_group("sink");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    for hashers in [1, cores.clamp(2, 4)] {
        group.bench_function(
            format!("write and verify 256 MiB, {hashers} hashing threads"),
            |b| {
                b.iter(|| {
                    let file = tempfile::tempfile_in(&dir).unwrap();
                    ft_client::bench_sink(file, SIZE as u64, stream.clone(), hashers).unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, sink);
criterion_main!(benches);
