//! The token scanner's throughput: `KeyFormat::find_tokens` and `redact`
//! over 1 MiB of log-like text, with and without keys in it, and over text
//! built to look like keys everywhere (every `_` a possible start).
//!
//! ```sh
//! cargo bench --bench scan
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_keyauth::KeyFormat;
use tower_keyauth::ids::KeyKind;

const MIB: usize = 1 << 20;

/// Log lines up to `MIB` bytes; every `every`-th line carries a key.
fn log_text(format: &KeyFormat, every: Option<usize>) -> String {
    let mut text = String::with_capacity(MIB + 256);
    let mut line = 0;
    while text.len() < MIB {
        line += 1;
        text.push_str("2026-12-03T07:30:00Z INFO request method=GET path=/v1/objects status=200 ");
        match every {
            Some(every) if line % every == 0 => {
                let minted = format.mint(KeyKind::Organization, None).unwrap();
                text.push_str("authorization=\"Bearer ");
                text.push_str(minted.token.expose_secret());
                text.push('"');
            }
            _ => {
                text.push_str("user_agent=\"curl/8.5.0\" trace_id=4bf92f3577b34da6a3ce929d0e0e4736")
            }
        }
        text.push('\n');
    }
    text
}

fn scan(c: &mut Criterion) {
    let format = KeyFormat::default();
    let clean = log_text(&format, None);
    let with_keys = log_text(&format, Some(100));
    // Prefix-shaped text everywhere: `ak_` followed by id-like runs.
    let look_alikes = "ak_Xb3kP9qLm2Ts.abcdefghijklmnopqrstuvwxyz012345 ".repeat(MIB / 48);
    assert_eq!(format.find_tokens(&clean).count(), 0);
    assert!(format.find_tokens(&with_keys).count() > 0);
    assert_eq!(format.find_tokens(&look_alikes).count(), 0);

    let mut group = c.benchmark_group("scan");
    for (name, text) in [
        ("clean_log", &clean),
        ("log_with_keys", &with_keys),
        ("look_alikes", &look_alikes),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("find_tokens/{name}"), |b| {
            b.iter(|| format.find_tokens(black_box(text)).count())
        });
        group.bench_function(format!("redact/{name}"), |b| {
            b.iter(|| format.redact(black_box(text)).len())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = scan
}
criterion_main!(benches);
