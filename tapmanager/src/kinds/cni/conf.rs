//! Finding a CNI network configuration by name, as libcni does: the files of the conf dir
//! ending in `.conflist`, `.conf` or `.json`, in name order; the first whose `name` matches
//! wins. A single-plugin `.conf` becomes a list of one.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    /// Each plugin's own configuration, as written.
    pub plugins: Vec<Value>,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Where it was read from.
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("cannot read CNI config dir {}", .0.display())]
    ReadDir(PathBuf, #[source] std::io::Error),
    #[error("no CNI network {name:?} in {} (files ending .conflist, .conf or .json; found: {found})", .dir.display())]
    NotFound {
        name: String,
        dir: PathBuf,
        found: String,
    },
    #[error("CNI config {}: {problem}", .file.display())]
    Invalid { file: PathBuf, problem: String },
}

fn invalid(file: &Path, problem: impl Into<String>) -> ConfError {
    ConfError::Invalid {
        file: file.to_owned(),
        problem: problem.into(),
    }
}

/// Parses one file's contents.
pub fn parse(file: &Path, text: &str) -> Result<ConfList, ConfError> {
    let v: Value = serde_json::from_str(text).map_err(|e| invalid(file, e.to_string()))?;
    let s = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let name = s("name").ok_or_else(|| invalid(file, "no \"name\""))?;
    let cni_version = s("cniVersion").unwrap_or_else(|| "0.1.0".to_owned());
    let b = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    let is_list = file.extension().is_some_and(|e| e == "conflist");
    let plugins = if is_list {
        let list = v
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(file, "a .conflist needs a \"plugins\" array"))?;
        list.clone()
    } else {
        vec![v.clone()]
    };
    if plugins.is_empty() {
        return Err(invalid(file, "\"plugins\" is empty"));
    }
    for (i, p) in plugins.iter().enumerate() {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        // The type names a file in the bin dirs: no path separators, nothing hidden.
        if ty.is_empty() || ty.contains('/') || ty.starts_with('.') {
            return Err(invalid(
                file,
                format!("plugin {i} has no valid \"type\" ({ty:?})"),
            ));
        }
    }
    Ok(ConfList {
        name,
        cni_version,
        plugins,
        disable_check: b("disableCheck"),
        disable_gc: b("disableGC"),
        source: file.to_owned(),
    })
}

/// Loads network `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<ConfList, ConfError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConfError::ReadDir(dir.to_owned(), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
        })
        .collect();
    files.sort();
    let mut found = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        match parse(f, &text) {
            Ok(list) if list.name == name => return Ok(list),
            Ok(list) => found.push(list.name),
            // A broken file that might be the one asked for is reported; others are skipped,
            // as libcni skips them.
            Err(e) if text.contains(&format!("\"{name}\"")) => return Err(e),
            Err(_) => {}
        }
    }
    Err(ConfError::NotFound {
        name: name.to_owned(),
        dir: dir.to_owned(),
        found: if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_single_confs_load_by_name_in_file_order() {
        let dir = std::env::temp_dir().join(format!("tm-cniconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"single","type":"ptp","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("30-c.conflist"),
            r#"{"name":"pods","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("README"), "not a config").unwrap();
        let l = load(&dir, "pods").unwrap();
        assert_eq!(l.plugins.len(), 2, "the first file of that name wins");
        assert_eq!(l.cni_version, "1.0.0");
        let s = load(&dir, "single").unwrap();
        assert_eq!(s.plugins[0]["type"], "ptp");
        let e = load(&dir, "nope").unwrap_err().to_string();
        assert!(e.contains("found: pods, single, pods"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plugin_type_must_be_a_plain_file_name() {
        let f = Path::new("x.conflist");
        for ty in ["", "../../bin/sh", ".hidden", "/bin/sh"] {
            let text = format!(r#"{{"name":"n","plugins":[{{"type":"{ty}"}}]}}"#);
            assert!(parse(f, &text).is_err(), "{ty:?}");
        }
        assert!(parse(f, r#"{"name":"n","plugins":[]}"#).is_err());
        assert!(parse(f, r#"{"plugins":[{"type":"bridge"}]}"#).is_err());
    }
}
