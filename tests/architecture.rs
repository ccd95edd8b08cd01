//! The shape of `src/`, checked: the modules depend on each other without
//! cycles (but the one tower has too, layer ↔ service), and every refusal's
//! challenge and body are built in `response.rs` alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` (a folder counts as one) with the
/// modules its code (not its comments) names as `crate::<module>`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let uses = graph.entry(module.to_owned()).or_default();
        for line in code_lines(&file) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != module {
                    uses.insert(name);
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|name| modules.contains(name));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of a file that are not comments.
fn code_lines(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
        .map(str::to_owned)
        .collect()
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(module) = stack.pop() {
        if module == to {
            return true;
        }
        if seen.insert(module.clone()) {
            stack.extend(graph[&module].iter().cloned());
        }
    }
    false
}

#[test]
fn no_module_cycles_but_layer_and_service() {
    let graph = module_graph();
    assert!(graph.contains_key("verify") && graph.contains_key("store"));
    let mut cyclic = BTreeSet::new();
    for (module, uses) in &graph {
        for used in uses {
            if reaches(&graph, used, module) {
                cyclic.insert(module.clone());
            }
        }
    }
    let allowed: BTreeSet<String> = ["layer", "service"].map(String::from).into();
    assert_eq!(cyclic, allowed, "modules on a cycle; the graph: {graph:#?}");
}

#[test]
fn only_response_builds_challenges_and_error_bodies() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let builders = [
        "WWW_AUTHENTICATE",
        "www-authenticate",
        r#"{\"error\""#,
        r#""{"error""#,
    ];
    let mut found = Vec::new();
    for file in rust_files(&src) {
        if file.ends_with("response.rs") {
            continue;
        }
        for line in code_lines(&file) {
            let lower = line.to_ascii_lowercase();
            for builder in builders {
                if line.contains(builder) || lower.contains(&builder.to_ascii_lowercase()) {
                    found.push(format!("{}: {line}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "built outside response.rs: {found:#?}");
    let response = code_lines(&src.join("response.rs")).join("\n");
    assert!(response.contains("WWW_AUTHENTICATE") && response.contains(r#"{\"error\""#));
}
