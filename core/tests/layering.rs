//! The layering of `core/src`: its top-level modules import one way down, from the user
//! API to the foundations, and the daemons never link the runtime, the API, actors or
//! the object store. Read from the sources themselves: every `crate::` path in code
//! (comments aside) is an edge from the module of its file to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `core/src` and its layer: a module may use only modules of
/// lower layers. A new module goes here, where it belongs.
const LAYERS: &[(&str, u32)] = &[
    ("id", 0),
    ("sync", 0),
    ("registry", 0),
    ("error", 1),
    ("state", 1),
    ("config", 2),
    ("session", 2),
    ("object", 3),
    ("task", 4),
    ("actor", 5),
    ("sched", 6),
    ("wire", 7),
    ("daemon", 8),
    ("runtime", 8),
    ("api", 9),
    ("testing", 10),
];

/// What the daemons may use: the wire protocol, the resource books, task specs, the
/// session and the foundations.
const DAEMON_MAY_USE: &[&str] = &[
    "wire", "sched", "task", "session", "config", "error", "id", "sync", "registry", "state",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("core/src is readable")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line comments, doc comments, block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The names `lib.rs` re-exports at the crate root, and the module each comes from.
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let code = code(lib);
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_start_matches("crate::");
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        let rest = rest.trim();
        let items: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.trim_end_matches('}').split(',').collect(),
            None => vec![rest.rsplit("::").next().unwrap_or(rest)],
        };
        for item in items {
            let item = item.trim();
            let name = item.rsplit("::").next().unwrap_or(item);
            if !name.is_empty() {
                names.insert(name.to_string(), module.to_string());
            }
        }
    }
    names
}

/// The module each `crate::X` in `code` names: `X` itself if it is a module, else the
/// module the crate root re-exports `X` from (or defines the macro `X` in).
fn uses(code: &str, roots: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last().unwrap_or(' ');
        if before.is_alphanumeric() || before == '_' {
            continue;
        }
        let name: String = code[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let module = LAYERS
            .iter()
            .find(|(m, _)| *m == name)
            .map(|(m, _)| m.to_string());
        match module.or_else(|| roots.get(&name).cloned()) {
            Some(module) => found.insert(module),
            None => found.insert(name),
        };
    }
    found
}

#[test]
fn modules_import_one_way_down_and_daemons_stay_out_of_the_runtime() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let roots = root_names(&lib);
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    // Exported macros live at the crate root too.
    let mut roots = roots;
    for file in &files {
        let text = code(&std::fs::read_to_string(file).expect("a source file"));
        let rel = file.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        for (i, _) in text.match_indices("macro_rules! ") {
            let name: String = text[i + "macro_rules! ".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            roots.insert(name, module.clone());
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        if first == "lib.rs" || first == "bin" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let Some(&mine) = layer.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in this test's table",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a source file");
        for used in uses(&code(&text), &roots) {
            if used == module {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .insert(used.clone());
            let Some(&theirs) = layer.get(used.as_str()) else {
                problems.push(format!(
                    "{}: uses `crate::{used}`, not a module",
                    rel.display()
                ));
                continue;
            };
            if theirs >= mine {
                problems.push(format!(
                    "{}: `{module}` (layer {mine}) uses `{used}` (layer {theirs}): imports go \
                     down only",
                    rel.display()
                ));
            }
            if module == "daemon" && !DAEMON_MAY_USE.contains(&used.as_str()) {
                problems.push(format!(
                    "{}: a daemon uses `{used}`; daemons use only {DAEMON_MAY_USE:?}",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
    // The table's order is a topological order of what the sources say; the edges must
    // form no cycle whatever the table says.
    let mut visiting = BTreeSet::new();
    let mut done = BTreeSet::new();
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        visiting: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        if !visiting.insert(m.to_string()) {
            return Some(path.clone());
        }
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, visiting, done, path) {
                return Some(cycle);
            }
        }
        visiting.remove(m);
        done.insert(m.to_string());
        path.pop();
        None
    }
    for m in edges.keys() {
        let cycle = visit(m, &edges, &mut visiting, &mut done, &mut Vec::new());
        assert!(cycle.is_none(), "a cycle between modules: {cycle:?}");
    }
    // The check reads what it should: the runtime uses the store, the API the runtime.
    assert!(edges["runtime"].contains("object"), "{edges:?}");
    assert!(edges["api"].contains("runtime"), "{edges:?}");
}

#[test]
fn the_reader_of_sources_sees_through_comments_and_re_exports() {
    let roots = root_names("pub use config::Config;\npub use api::{get, put};\n");
    assert_eq!(roots["Config"], "config");
    assert_eq!(roots["put"], "api");
    let used = uses(
        &code(
            "// crate::runtime\nuse crate::Config;\n/* crate::api */ let x = crate::object::Store;",
        ),
        &roots,
    );
    assert_eq!(
        used,
        BTreeSet::from(["config".to_string(), "object".to_string()])
    );
}
