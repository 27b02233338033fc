//! The import graph of src/: which module (one per file) uses which, through `crate::`,
//! `super::` and child-module paths outside test code and comments. It must have no cycle,
//! between files or between top-level modules, and the bottom layers must stay at the bottom
//! (docs/ARCHITECTURE.md, "Modules and what each may use").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths that follow `prefix` in `code` (`crate::store::retry::RetryPolicy` gives
/// `store::retry::RetryPolicy`), including each top-level item of a `prefix{a, b::c}` group.
fn paths(code: &str, prefix: &str, into: &mut BTreeSet<String>) {
    let path = |s: &str| -> String {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(s.len());
        s[..end].trim_end_matches(':').to_string()
    };
    for (i, _) in code.match_indices(prefix) {
        // `xcrate::` or `a::super::` are other paths.
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            into.insert(path(rest));
            continue;
        };
        let group = &group[..group.find(';').unwrap_or(group.len())];
        // Items at the group's top level only: `a::{b, c}` uses `a`.
        let mut depth = 0;
        let mut item_start = true;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && depth == 0 && !c.is_whitespace() => {
                    item_start = false;
                    into.insert(path(&group[j..]));
                }
                _ => {}
            }
        }
    }
}

/// The module a file is: `src/backup/commit.rs` → `backup::commit`, `src/backup/mod.rs` →
/// `backup`, `src/error.rs` → `error`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "mod")
        .collect();
    parts.join("::")
}

/// Code without its test module and its comments (doc links name modules too).
fn code_of(text: &str) -> String {
    let text = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The import graph by module (one node per file): `crate::` paths, `super::` paths and paths
/// through a child module, each to the longest module it names.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let longest = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut used = BTreeSet::new();
        paths(&code, "crate::", &mut used);
        let mut relative = BTreeSet::new();
        paths(&code, "super::", &mut relative);
        for p in relative {
            // `super::name` is a sibling module, or an item of the parent itself.
            used.insert(match &parent {
                Some(parent) => format!("{parent}::{p}"),
                None => p,
            });
        }
        let children = modules
            .iter()
            .filter_map(|m| m.strip_prefix(&format!("{module}::")))
            .filter(|child| !child.contains("::"));
        for child in children {
            let mut through = BTreeSet::new();
            paths(&code, &format!("{child}::"), &mut through);
            if !through.is_empty() || code.contains(&format!("use {child};")) {
                used.insert(format!("{module}::{child}"));
            }
        }
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            used.iter()
                .filter_map(|p| longest(p))
                .filter(|m| *m != module),
        );
    }
    graph
}

/// The graph of top-level modules (`backup::commit` counts as `backup`).
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut out = Graph::new();
    for (from, to) in graph {
        let edges = out.entry(top(from)).or_default();
        edges.extend(to.iter().map(|m| top(m)).filter(|m| *m != top(from)));
    }
    out
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_import_graph_of_src_has_no_cycle() {
    let graph = graph();
    assert!(graph.len() > 60, "found only {:?}", graph.keys());
    // The graph sees paths through child modules, `super::` and `crate::`.
    assert!(
        graph["backup"].contains("backup::commit"),
        "{:?}",
        graph["backup"]
    );
    assert!(graph["backup::commit"].contains("backup::sources"));
    assert!(graph["backup::commit"].contains("uploads"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" → "));
    }
    if let Some(cycle) = find_cycle(&top_level(&graph)) {
        panic!(
            "import cycle between top-level modules: {}",
            cycle.join(" → ")
        );
    }
    // The check itself finds a cycle when there is one.
    let mut looped = graph.clone();
    looped
        .get_mut("schema::layout")
        .unwrap()
        .insert("backup::commit".into());
    assert!(find_cycle(&looped).is_some());
}

/// The layers of docs/ARCHITECTURE.md, "Modules and what each may use", bottom first.
const LAYERS: &[&[&str]] = &[
    &["schema"],
    &["atomic", "process", "lock", "tarstream", "progress"],
    &["store"],
    &["policy"],
    &["keys", "pipeline"],
    &["config"],
    &["source"],
    &[
        "connect", "catalog", "plan", "uploads", "prune", "error", "logging", "notify",
    ],
    &[
        "backup", "recover", "verify", "bucket", "quilt", "report", "metrics",
    ],
    &["cli", "commands"],
];

#[test]
fn every_module_uses_only_its_own_layer_and_those_below() {
    let graph = top_level(&graph());
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    for (module, used) in &graph {
        let Some(own) = layer(module) else {
            panic!("{module} is in no layer of docs/ARCHITECTURE.md (and LAYERS here)");
        };
        let above: Vec<&String> = used
            .iter()
            .filter(|u| layer(u).is_none_or(|l| l > own))
            .collect();
        assert!(above.is_empty(), "{module} uses {above:?}, above its layer");
    }
    // The schema uses nothing else of s3nap.
    assert!(graph.get("schema").is_none_or(|u| u.is_empty()));
}
