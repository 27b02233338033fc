//! The import graph of src/: which top-level module uses which (`crate::…` paths outside test
//! code). It must have no cycle, and the bottom layers must stay at the bottom
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

/// Module names used through `prefix` (`crate::` or, in a top-level file, `super::`),
/// including those inside `use crate::{a, b::c}` groups.
fn uses(code: &str, prefix: &str, into: &mut BTreeSet<String>) {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find(';').unwrap_or(group.len())];
            // Items at the group's top level only: `a::{b, c}` uses `a`.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            into.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                into.insert(name);
            }
        }
    }
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = top_module(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // Test modules may use anything.
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let mut used = BTreeSet::new();
        uses(code, "crate::", &mut used);
        if file.parent() == Some(src.as_path()) {
            uses(code, "super::", &mut used);
        }
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            used.into_iter()
                .filter(|u| *u != module && modules.contains(u)),
        );
    }
    graph
}

/// `src/backup/commit.rs` → `backup`, `src/error.rs` → `error`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
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
    assert!(graph.len() > 20, "found only {:?}", graph.keys());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
    // The check itself finds a cycle when there is one.
    let mut looped = graph.clone();
    looped.get_mut("schema").unwrap().insert("backup".into());
    assert!(find_cycle(&looped).is_some());
}

#[test]
fn the_bottom_layers_use_only_what_is_below_them() {
    let graph = graph();
    let allowed: &[(&str, &[&str])] = &[
        ("schema", &[]),
        ("atomic", &[]),
        ("process", &[]),
        ("store", &["atomic"]),
        ("policy", &["schema"]),
        ("pipeline", &["schema", "store", "keys", "process"]),
        ("source", &["schema", "config", "atomic", "process"]),
    ];
    for (module, may_use) in allowed {
        let used = graph.get(*module).cloned().unwrap_or_default();
        let extra: Vec<&String> = used
            .iter()
            .filter(|u| !may_use.contains(&u.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} uses {extra:?}");
    }
}
