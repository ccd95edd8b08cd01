//! Finds leaked keys: copies standard input to standard output with the
//! secret of every key masked (`ak_Xb3kP9qLm2Ts.****`), names each key on
//! standard error by its line and id (never its secret), and exits with 1
//! when it found one, 0 when not, 2 when reading or writing failed. So it
//! can stop a commit or a CI job:
//!
//! ```text
//! cargo run --example scan < app.log > app.redacted.log
//! git diff --cached -U0 | grep '^+' | cargo run -q --example scan > /dev/null   # a pre-commit hook: added lines only
//! SCAN_PREFIXES=andi_live,andi_test cargo run --example scan < app.log
//! ```
//!
//! It recognises the default `KeyFormat` (`ak_…` and `pat_…`) plus the
//! prefixes listed in `SCAN_PREFIXES`, separated by commas. A key counts
//! only with a valid checksum, so look-alikes pass; opaque legacy keys
//! cannot be recognised. Memory stays bounded however long the input or its
//! lines (see `tower_keyauth::scan::Redactor`).

use std::io;
use std::process::ExitCode;

use tower_keyauth::KeyFormat;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::scan::Redactor;

fn main() -> ExitCode {
    let format = match format_from_env() {
        Ok(format) => format,
        Err(message) => {
            eprintln!("scan: {message}");
            return ExitCode::from(2);
        }
    };
    let mut found = 0u64;
    let stdout = io::BufWriter::new(io::stdout().lock());
    let mut redactor = Redactor::with_callback(&format, stdout, |finding, line| {
        found += 1;
        eprintln!("line {line}: {} key {}", finding.prefix, finding.key_id);
    });
    let copied = io::copy(&mut io::stdin().lock(), &mut redactor).and_then(|_| redactor.finish());
    drop(redactor);
    if let Err(error) = copied {
        eprintln!("scan: {error}");
        return ExitCode::from(2);
    }
    if found == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("scan: {found} key(s) found; revoke them");
    ExitCode::from(1)
}

/// The default format plus the prefixes in `SCAN_PREFIXES`.
fn format_from_env() -> Result<KeyFormat, String> {
    let mut format = KeyFormat::default();
    let Ok(prefixes) = std::env::var("SCAN_PREFIXES") else {
        return Ok(format);
    };
    for prefix in prefixes.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // `KeyFormat::prefix` panics on these; say which one instead.
        let valid = prefix.len() <= 32
            && !prefix.starts_with('_')
            && !prefix.ends_with('_')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "SCAN_PREFIXES: {prefix:?} is not a key prefix (1 to 32 ASCII letters, digits and inner '_')"
            ));
        }
        // The kind does not matter for finding keys.
        format = format.prefix(prefix, KeyKind::Organization);
    }
    Ok(format)
}
