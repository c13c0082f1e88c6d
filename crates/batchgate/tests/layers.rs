//! The crate table of `docs/architecture.md` against the crates' own `Cargo.toml`s: every
//! crate under `crates/` has its row, the dependencies a row names are exactly the batchgate
//! crates its `[dependencies]` name, and each of them sits in a lower layer, so no crate
//! depends on one above it. Dev-dependencies are not counted (tests may use anything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root, two levels above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/batchgate is two levels below the root")
        .to_path_buf()
}

/// One row of the table: its layer, and the crates it says it depends on (`None`: the
/// binary's "every crate above but testkit").
struct Row {
    layer: u32,
    depends_on: Option<BTreeSet<String>>,
}

/// The rows of the crate table, by crate directory name.
fn table() -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).expect("read docs");
    let start = text
        .find("| layer | crate | the one thing it holds |")
        .expect("the crate table");
    let mut rows = BTreeMap::new();
    for line in text[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "a row of four cells: {line}");
        let layer = cells[0].parse().expect("a layer number");
        let name = cells[1].trim_matches('`').to_owned();
        let depends_on = match cells[3] {
            "—" => Some(BTreeSet::new()),
            every if every.starts_with("every crate") => None,
            list => Some(list.split(", ").map(str::to_owned).collect()),
        };
        rows.insert(name, Row { layer, depends_on });
    }
    rows
}

/// Each crate directory's batchgate dependencies (as directory names), from its manifest.
fn manifests() -> BTreeMap<String, BTreeSet<String>> {
    let mut packages = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("read crates/") {
        let dir = entry.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Table = text.parse().expect("a manifest");
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a crate directory's name")
            .to_owned();
        let package = manifest["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        packages.insert(package, name.clone());
        manifests.insert(name, manifest);
    }
    manifests
        .into_iter()
        .map(|(name, manifest)| {
            let deps = manifest
                .get("dependencies")
                .and_then(toml::Value::as_table)
                .map(|deps| {
                    deps.keys()
                        .filter_map(|package| packages.get(package).cloned())
                        .collect()
                })
                .unwrap_or_default();
            (name, deps)
        })
        .collect()
}

#[test]
fn the_crate_table_matches_the_manifests_and_no_crate_depends_on_one_above_it() {
    let table = table();
    let manifests = manifests();
    let documented: BTreeSet<&String> = table.keys().collect();
    let present: BTreeSet<&String> = manifests.keys().collect();
    assert_eq!(documented, present, "the table's crates and crates/ differ");
    for (name, deps) in &manifests {
        let row = &table[name];
        if let Some(said) = &row.depends_on {
            assert_eq!(
                said, deps,
                "{name}: the table's dependencies and Cargo.toml's differ"
            );
        }
        for dep in deps {
            assert!(
                table[dep].layer < row.layer,
                "{name} (layer {}) depends on {dep} (layer {}), not below it",
                row.layer,
                table[dep].layer
            );
        }
    }
}
