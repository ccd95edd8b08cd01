//! Whether one more `issue` costs the same however many keys a store holds
//! (issue 13): the median time of one issue into an organization that
//! already holds keys, and into a brand-new one, in stores of 10³, 10⁴ and
//! 10⁵ keys (MemoryStore also 10⁶), 10 keys per organization.
//!
//! ```sh
//! cargo bench --bench issue_scale
//! KEYAUTH_BENCH_POSTGRES_URL=postgres://user@host:port/postgres cargo bench --bench issue_scale
//! ISSUE_SCALE_SIZES=1000,10000 ISSUE_SCALE_MEMORY_SIZES=1000,10000 cargo bench --bench issue_scale
//! ```
//!
//! Every store is filled afresh for every size: `MemoryStore` through
//! `MemoryStore::insert`, `SqliteStore` (a file in a temporary directory,
//! opened with `SqliteStore::connect` as an application opens it, never
//! analyzed, its write-ahead log emptied after the fill) and `PostgresStore` by one `INSERT … SELECT` of generated rows.
//! PostgreSQL rows only with `KEYAUTH_BENCH_POSTGRES_URL`; the database
//! `keyauth_bench_issue_scale` on that server is dropped and recreated,
//! each size in a schema of its own, analyzed after the fill as autovacuum
//! would. Once all are filled, each case takes `ISSUE_SCALE_ISSUES` (200)
//! issues into organizations of the fill (a different one each time) and as
//! many into new organizations, alternating, after 10 unmeasured ones; the
//! cases take turns in `ISSUE_SCALE_ROUNDS` (50) rounds, so that a slow
//! spell of the machine hits every size alike. Every issue has a limit
//! (`KeyPolicy::AtMost`, never reached), so the store counts the owner's
//! usable keys, as for a plan with a limit, besides inserting the key.
//!
//! The table gives the median µs per issue and, per store, the ratio of the
//! largest of `ISSUE_SCALE_SIZES` (10⁵) to the smallest (10³). The bench
//! exits with status 1 when that ratio exceeds 2 for `MemoryStore` or
//! `SqliteStore` (issue 13's acceptance: one more issue at 10⁵ keys costs at
//! most twice one at 10³, same run). `MemoryStore` at 10⁶ is shown, not
//! judged.

use std::time::{Duration, Instant, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::store::{KeyPolicy, KeyRecord, Owner, PostgresStore, SqliteStore};
use tower_keyauth::{KeyLifecycle, MemoryStore, NewKey};

#[path = "support/mod.rs"]
mod support;
use support::recreate_database;

const DATABASE: &str = "keyauth_bench_issue_scale";
/// Keys per organization in the fill.
const KEYS_PER_ORG: usize = 10;
/// The limit of every measured issue: never reached.
const LIMIT: usize = 1 << 30;
/// Issues before measuring, of each kind.
const WARM_UP: usize = 10;
/// The largest ratio of the largest size to the smallest that passes.
const MAX_RATIO: f64 = 2.0;

fn sizes_from_env(name: &str, default: &[usize]) -> Vec<usize> {
    let mut sizes = match std::env::var(name) {
        Ok(value) => value
            .split(',')
            .map(|size| {
                size.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: {size:?} is not a number"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    };
    sizes.sort_unstable();
    sizes.dedup();
    assert!(!sizes.is_empty(), "{name} names no size");
    sizes
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The organization that holds the `i`th key of a fill.
fn org_of(i: usize) -> String {
    format!("org-{}", i / KEYS_PER_ORG)
}

/// One store filled to one size, and what was measured of it.
struct Case {
    store: &'static str,
    keys: usize,
    fill: Duration,
    lifecycle: Box<dyn KeyLifecycle>,
    /// Issues made so far, to spread them over the fill's organizations.
    issued: usize,
    existing: Vec<Duration>,
    new: Vec<Duration>,
}

impl Case {
    fn new(
        store: &'static str,
        keys: usize,
        fill: Duration,
        lifecycle: Box<dyn KeyLifecycle>,
    ) -> Self {
        Self {
            store,
            keys,
            fill,
            lifecycle,
            issued: 0,
            existing: Vec::new(),
            new: Vec::new(),
        }
    }

    /// `count` issues into organizations of the fill (a different one each
    /// time, spread over all of them) and as many into new ones,
    /// alternating; timed unless `warm_up`.
    async fn issue(&mut self, count: usize, warm_up: bool) {
        let orgs = self.keys.div_ceil(KEYS_PER_ORG).max(1);
        for _ in 0..count {
            let n = self.issued;
            self.issued += 1;
            // Coprime with most counts of organizations: a stride through
            // all of them.
            let existing = Owner::org(format!("org-{}", n * 7_919 % orgs));
            let start = Instant::now();
            self.lifecycle.issue(limited(existing)).await.unwrap();
            let existing = start.elapsed();
            let new = Owner::org(format!("new-org-{n}"));
            let start = Instant::now();
            self.lifecycle.issue(limited(new)).await.unwrap();
            let new = start.elapsed();
            if !warm_up {
                self.existing.push(existing);
                self.new.push(new);
            }
        }
    }

    fn medians(&self) -> (f64, f64) {
        (micros(median(&self.existing)), micros(median(&self.new)))
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut times = times.to_vec();
    times.sort_unstable();
    times[times.len() / 2]
}

fn limited(owner: Owner) -> NewKey {
    NewKey::new(owner).policy(KeyPolicy::AtMost(LIMIT))
}

async fn memory_case(keys: usize) -> Case {
    let start = Instant::now();
    let store = MemoryStore::new();
    let created = SystemTime::now();
    for i in 0..keys {
        let id = format!("fill{i:08}");
        let hash = KeyHash::of(&id);
        store.insert(KeyRecord::new(id, hash, Owner::org(org_of(i))).with_created_at(created));
    }
    Case::new("MemoryStore", keys, start.elapsed(), Box::new(store))
}

async fn sqlite_case(dir: &std::path::Path, keys: usize) -> Case {
    let start = Instant::now();
    let url = format!("sqlite://{}", dir.join(format!("keys-{keys}.db")).display());
    let store = SqliteStore::connect(&url).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
         INSERT INTO keyauth_keys (id, hash, prefix, owner_kind, org_id, scopes, name, created_at)
         SELECT printf('fill%08d', i), randomblob(32), 'ak', 'organization',
                'org-' || (i / ?2), '*', '', ?3
         FROM n",
    )
    .bind(i64::try_from(keys).unwrap())
    .bind(i64::try_from(KEYS_PER_ORG).unwrap())
    .bind(micros_now())
    .execute(store.pool())
    .await
    .unwrap();
    // The fill leaves a write-ahead log as large as the rows it wrote, which
    // the issues would then overwrite; a small log grows with each commit
    // instead, and a commit that grows the file costs more to sync (350 µs
    // against 120 µs here). Every size starts from an empty log.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    Case::new("SqliteStore", keys, start.elapsed(), Box::new(store))
}

/// A store of `keys` keys in the schema `keys_<keys>` of `database`.
async fn postgres_case(database: &PgConnectOptions, keys: usize) -> Case {
    let start = Instant::now();
    let schema = format!("keys_{keys}");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(database.clone())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(database.clone().options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool, Default::default())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO keyauth_keys (id, hash, prefix, owner_kind, org_id, scopes, name, created_at)
         SELECT 'fill' || lpad(i::TEXT, 8, '0'), sha256(i::TEXT::BYTEA), 'ak', 'organization',
                'org-' || (i / $2), '{*}', '', now()
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(i64::try_from(keys).unwrap())
    .bind(i64::try_from(KEYS_PER_ORG).unwrap())
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE keyauth_keys")
        .execute(store.pool())
        .await
        .unwrap();
    Case::new("PostgresStore", keys, start.elapsed(), Box::new(store))
}

fn micros_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_micros()).unwrap()
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let passed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run());
    if !passed {
        std::process::exit(1);
    }
}

/// Fills every store to every size, measures them interleaved (round after
/// round, every case a share of its issues in each, so that a slow spell of
/// the machine hits all sizes alike), prints the table, and says whether
/// every judged ratio holds.
async fn run() -> bool {
    let sizes = sizes_from_env("ISSUE_SCALE_SIZES", &[1_000, 10_000, 100_000]);
    let mut memory_sizes = sizes.clone();
    memory_sizes.extend(sizes_from_env("ISSUE_SCALE_MEMORY_SIZES", &[1_000_000]));
    memory_sizes.sort_unstable();
    memory_sizes.dedup();
    let issues = setting("ISSUE_SCALE_ISSUES", 200);
    let rounds = setting("ISSUE_SCALE_ROUNDS", 50).clamp(1, issues.max(1));
    let dir =
        std::env::temp_dir().join(format!("keyauth-bench-issue-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut cases = Vec::new();
    for &keys in &memory_sizes {
        cases.push(memory_case(keys).await);
    }
    for &keys in &sizes {
        cases.push(sqlite_case(&dir, keys).await);
    }
    let mut stores = vec!["MemoryStore", "SqliteStore"];
    match std::env::var("KEYAUTH_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let database = recreate_database(&url, DATABASE).await;
            for &keys in &sizes {
                cases.push(postgres_case(&database, keys).await);
            }
            stores.push("PostgresStore");
        }
        _ => eprintln!("PostgresStore skipped: KEYAUTH_BENCH_POSTGRES_URL is unset"),
    }
    let filled: Duration = cases.iter().map(|case| case.fill).sum();
    eprintln!("filled in {:.1} s; measuring", filled.as_secs_f64());
    for case in &mut cases {
        case.issue(WARM_UP, true).await;
    }
    for round in 0..rounds {
        let share = issues * (round + 1) / rounds - issues * round / rounds;
        for case in &mut cases {
            case.issue(share, false).await;
        }
    }
    println!(
        "\none more issue (median of {issues} per column, measured in {rounds} interleaved rounds; \
         each with a limit, so the owner's usable keys are counted)\n"
    );
    println!(
        "{:<14} {:>9} {:>17} {:>13} {:>9}",
        "store", "keys", "existing org µs", "new org µs", "fill s"
    );
    for case in &cases {
        let (existing, new) = case.medians();
        println!(
            "{:<14} {:>9} {:>17.1} {:>13.1} {:>9.1}",
            case.store,
            case.keys,
            existing,
            new,
            case.fill.as_secs_f64()
        );
    }

    let medians = |store: &str, keys: usize| {
        cases
            .iter()
            .find(|case| case.store == store && case.keys == keys)
            .map(Case::medians)
            .unwrap()
    };
    let (smallest, largest) = (sizes[0], sizes[sizes.len() - 1]);
    println!(
        "\nratio {largest} keys ÷ {smallest} keys (at most {MAX_RATIO} for MemoryStore and SqliteStore)\n"
    );
    let mut passed = true;
    for store in stores {
        let (low, high) = (medians(store, smallest), medians(store, largest));
        let (existing, new) = (high.0 / low.0, high.1 / low.1);
        let verdict = if store == "PostgresStore" {
            "not judged"
        } else if existing <= MAX_RATIO && new <= MAX_RATIO {
            "ok"
        } else {
            passed = false;
            "FAILS"
        };
        println!("{store:<14} existing org {existing:>6.2}   new org {new:>6.2}   {verdict}");
    }
    let most = memory_sizes[memory_sizes.len() - 1];
    if most > largest {
        let (low, high) = (
            medians("MemoryStore", smallest),
            medians("MemoryStore", most),
        );
        println!(
            "MemoryStore at {most} keys ÷ {smallest} keys: existing org {:.2}, new org {:.2} (not judged)",
            high.0 / low.0,
            high.1 / low.1
        );
    }
    drop(cases);
    std::fs::remove_dir_all(&dir).unwrap();
    if !passed {
        println!("\nFAILED: one more issue grows with the number of keys");
    }
    passed
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
