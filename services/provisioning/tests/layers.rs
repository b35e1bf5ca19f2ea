//! The modules stay layered as lib.rs describes: each one reaches (`crate::<module>`) only
//! modules of the layers before it, so no import circle can come back.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

/// The layers, lowest first, as in the table of lib.rs.
const LAYERS: [&[&str]; 10] = [
    &["schema", "error", "crypto", "states"],
    &["config"],
    &["users", "seats", "work", "team_members", "project_members"],
    &["clusters"],
    &["hopsworks", "kube_checks", "rondb"],
    &["validate", "cluster_checks"],
    &["assignments", "cluster_health"],
    &["teams", "lifecycle"],
    &["events", "erasure", "worker", "rotate", "project_sync", "metrics", "integrity"],
    &["routes"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The modules `source` reaches through `crate::`, comments left out.
fn reached(source: &str) -> Vec<String> {
    let code: Vec<&str> = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
    let code = code.join("\n");
    assert!(!code.contains("crate::{"), "grouped crate imports are not read by this test");
    code.split("crate::")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn no_module_reaches_one_of_its_own_layer_or_above() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        // A module's folder (`src/routes/`) holds its submodules, judged as the module itself.
        if path.is_dir() {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if matches!(name.as_str(), "lib" | "main") {
            continue;
        }
        let own = layer(&name).unwrap_or_else(|| panic!("src/{name}.rs is in no layer of lib.rs's table"));
        let mut files = vec![path.clone()];
        if let Ok(children) = std::fs::read_dir(src.join(&name)) {
            files.extend(children.map(|c| c.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")));
        }
        for file in files {
            for target in reached(&std::fs::read_to_string(&file).unwrap()) {
                // Items of the crate root (such as `SERVICE`) are not modules.
                let Some(theirs) = layer(&target) else { continue };
                assert!(
                    theirs < own,
                    "{name} (layer {}, {}) reaches {target} (layer {})",
                    own + 1,
                    file.display(),
                    theirs + 1
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, LAYERS.iter().map(|l| l.len()).sum::<usize>(), "every module is checked");
}
