//! The proxy's module graph has no import loops: at every level of the
//! module tree, the sibling modules' `crate::`/`super::` references form a
//! directed acyclic graph. `cargo test -p mesh-proxy --test module_graph --
//! --nocapture` prints the graph, parents first, each module with what it
//! uses among its siblings.
//!
//! The references are read from the source text (`use` items and inline
//! paths, comments and `#[cfg(test)]` modules left out), which is what a
//! reader follows; re-exports at the crate root are not resolved, so the
//! crate's own code names modules by their paths.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

type Module = Vec<String>;

/// Every module backed by a file under `src/`, with its source.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    walk(src, &mut Vec::new(), &mut out);
    out
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut BTreeMap<Module, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read src dir").map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name").to_owned();
        if path.is_dir() {
            prefix.push(name);
            walk(&path, prefix, out);
            prefix.pop();
        } else if path.extension().is_some_and(|e| e == "rs") {
            // `main.rs` is the binary, `tests.rs` files are `#[cfg(test)]` modules.
            if prefix.is_empty() && name == "main" || name == "tests" {
                continue;
            }
            let module = match name.as_str() {
                "lib" | "mod" => prefix.clone(),
                _ => prefix.iter().cloned().chain([name]).collect(),
            };
            out.insert(module, without_tests(&fs::read_to_string(&path).expect("read source")));
        }
    }
}

/// The source without comments and without `#[cfg(test)]` items.
fn without_tests(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the next item: up to its balanced closing brace or `;`.
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                let code = strip_comment(item);
                depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
                opened |= code.contains('{');
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(strip_comment(line));
        out.push('\n');
    }
    out
}

fn strip_comment(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The paths a module's source names, absolute (`crate::` resolved,
/// `super::`/`self::` made absolute), as segment lists.
fn references(module: &Module, source: &str) -> Vec<Vec<String>> {
    let mut refs = Vec::new();
    let bytes = source.as_bytes();
    for (start, root) in [("crate::", 0usize), ("super::", 1), ("self::", 2)] {
        let mut from = 0;
        while let Some(i) = source[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            // Part of a longer identifier (e.g. `my_crate::`)?
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let base: Vec<String> = match root {
                0 => Vec::new(),
                // In `a/b.rs` (module a::b), `super` is `a`; in `a/mod.rs` (module a) it is the root.
                1 => module[..module.len().saturating_sub(1)].to_vec(),
                _ => module.clone(),
            };
            collect_paths(&source[from..], base, &mut refs);
        }
    }
    refs
}

/// Reads a path tail (`a::b::C`, `a::{b, c::{D, E}}`) and pushes each full path.
fn collect_paths(tail: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tail = tail.trim_start();
    if let Some(group) = tail.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    collect_paths(&group[item_start..i], base.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    collect_paths(&group[item_start..i], base.clone(), out);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident_len = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
    if ident_len == 0 {
        if !base.is_empty() {
            out.push(base);
        }
        return;
    }
    let mut path = base;
    path.push(tail[..ident_len].to_owned());
    match tail[ident_len..].strip_prefix("::") {
        Some(rest) => collect_paths(rest, path, out),
        None => out.push(path),
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn target(path: &[String], known: &BTreeSet<Module>) -> Module {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p)).unwrap_or_default()
}

/// For each parent module, the edges between its children: `child -> sibling`.
type Graphs = BTreeMap<Module, BTreeMap<String, BTreeSet<String>>>;

fn graphs(src: &Path) -> Graphs {
    let modules = modules(src);
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut graphs: Graphs = BTreeMap::new();
    for (module, source) in &modules {
        // Every module appears in its parent's graph, edges or not.
        if let Some((last, parent)) = module.split_last() {
            graphs.entry(parent.to_vec()).or_default().entry(last.clone()).or_default();
        }
        for path in references(module, source) {
            let to = target(&path, &known);
            let common = module.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < module.len() && common < to.len() {
                graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default()
                    .insert(to[common].clone());
            }
        }
    }
    graphs
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(module: &Module) -> String {
    match module.is_empty() {
        true => "crate".to_owned(),
        false => format!("crate::{}", module.join("::")),
    }
}

#[test]
fn the_proxy_has_no_import_loops() {
    let graphs = graphs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut loops = Vec::new();
    for (parent, graph) in &graphs {
        println!("{}:", name(parent));
        for (child, uses) in graph {
            let uses: Vec<_> = uses.iter().map(String::as_str).collect();
            println!("  {child} -> {}", if uses.is_empty() { "-".to_owned() } else { uses.join(", ") });
        }
        for component in cycles(graph) {
            loops.push(format!("{}: {{{}}}", name(parent), component.join(", ")));
        }
    }
    assert!(loops.is_empty(), "import loops (modules that reach each other through `use`):\n  {}", loops.join("\n  "));
}

#[test]
fn the_graph_reader_finds_a_loop_and_nested_paths() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("http")).unwrap();
    fs::write(dir.join("lib.rs"), "pub mod a;\npub mod http;\n").unwrap();
    fs::write(dir.join("a.rs"), "use crate::{http::{body::Body, error}, Config};\n// crate::b::loop in a comment\n").unwrap();
    fs::write(dir.join("http/mod.rs"), "pub mod body;\npub mod error;\n").unwrap();
    fs::write(dir.join("http/body.rs"), "fn f() { super::error::g() }\n").unwrap();
    fs::write(dir.join("http/error.rs"), "use crate::http::body::Body;\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n}\n").unwrap();
    let graphs = graphs(&dir);
    fs::remove_dir_all(&dir).unwrap();
    let root = &graphs[&Vec::new()];
    assert_eq!(root["a"], BTreeSet::from(["http".to_owned()]));
    assert!(root["http"].is_empty(), "a #[cfg(test)] module's imports are not edges: {root:?}");
    let http = &graphs[&vec!["http".to_owned()]];
    assert_eq!(cycles(http), vec![vec!["body".to_owned(), "error".to_owned()]]);
    assert!(cycles(root).is_empty());
}
