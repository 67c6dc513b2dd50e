//! Running CNI plugins as the spec says: the command and the runtime's parameters in
//! `CNI_*` environment variables, the plugin's configuration on stdin, the result (or an error
//! object) on stdout. ADD runs the list in order, each plugin getting the one before's result
//! as `prevResult`; DEL runs it in reverse with the cached result; CHECK in order with it; GC
//! and STATUS (spec 1.1) without a container.

use super::conf::ConfList;
use super::result::{CniResult, ResultError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one plugin may run before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a plugin is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Del,
    Check,
    Gc,
    Status,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
            Op::Gc => "GC",
            Op::Status => "STATUS",
        }
    }
}

/// The container a plugin works on.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} is not in {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("cannot run CNI plugin {plugin}")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} did not finish {op} within {PLUGIN_TIMEOUT:?}")]
    Timeout { plugin: String, op: &'static str },
    /// The plugin's own error object: its code and message reach the caller.
    #[error("CNI plugin {plugin} failed {op}: code {code}: {msg}{}", if .details.is_empty() { String::new() } else { format!(" ({})", .details) })]
    Plugin {
        plugin: String,
        op: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} wrote a result tapmanager cannot read")]
    Result {
        plugin: String,
        #[source]
        source: ResultError,
    },
    #[error("CNI {op} needs spec version {needs} or later; network {network} says {has}")]
    Version {
        op: &'static str,
        needs: &'static str,
        network: String,
        has: String,
    },
}

impl CniError {
    /// The plugin's error code, when the plugin said one.
    pub fn code(&self) -> Option<u32> {
        match self {
            CniError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `a.b.c` as numbers, for comparing versions.
pub fn version(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

fn find(bin_dirs: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::NotFound {
            plugin: plugin.to_owned(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Runs one plugin; returns what it printed on success (empty for DEL, CHECK, GC, STATUS).
pub async fn invoke(
    bin_dirs: &[PathBuf],
    conf: &Value,
    op: Op,
    rt: Option<&Runtime>,
) -> Result<Option<Value>, CniError> {
    use tokio::io::AsyncWriteExt;
    let plugin = conf["type"].as_str().unwrap_or_default().to_owned();
    let path = find(bin_dirs, &plugin)?;
    let cni_path = std::env::join_paths(bin_dirs).unwrap_or_default();
    let mut plain = std::process::Command::new(&path);
    crate::privileges::confine(&mut plain, &crate::privileges::CNI_PLUGIN_CAPS);
    let mut cmd = tokio::process::Command::from(plain);
    cmd.env_clear()
        .env("CNI_COMMAND", op.as_str())
        .env("CNI_PATH", cni_path)
        // Plugins call iptables and friends.
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(rt) = rt {
        cmd.env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname);
    }
    let spawn = |source| CniError::Spawn {
        plugin: plugin.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    let input = serde_json::to_vec(conf).expect("a JSON value serializes");
    let mut stdin = child.stdin.take().expect("piped");
    // A plugin that exits without reading its stdin is not an error of ours.
    let _ = stdin.write_all(&input).await;
    drop(stdin);
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CniError::Timeout {
            plugin: plugin.clone(),
            op: op.as_str(),
        })?
        .map_err(spawn)?;
    let stdout: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let field = |k: &str| stdout.as_ref().and_then(|v| v.get(k)).cloned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(CniError::Plugin {
            plugin,
            op: op.as_str(),
            code: field("code")
                .and_then(|c| c.as_u64())
                .map_or(999, |c| c as u32),
            msg: field("msg")
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_else(|| {
                    if stderr.is_empty() {
                        format!("exited with {}", out.status)
                    } else {
                        stderr.clone()
                    }
                }),
            details: field("details")
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_default(),
        });
    }
    Ok(stdout)
}

/// One plugin's stdin: its own config with the list's name and version, and `prevResult`.
fn plugin_conf(list: &ConfList, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut c = plugin.clone();
    c["name"] = list.name.clone().into();
    c["cniVersion"] = list.cni_version.clone().into();
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// ADD: the whole list in order. On an error the caller runs [`del`] (the spec's cleanup).
pub async fn add(list: &ConfList, bins: &[PathBuf], rt: &Runtime) -> Result<CniResult, CniError> {
    let mut prev: Option<Value> = None;
    for p in &list.plugins {
        let out = invoke(
            bins,
            &plugin_conf(list, p, prev.as_ref()),
            Op::Add,
            Some(rt),
        )
        .await?;
        // A plugin with nothing to say passes the previous result on.
        if let Some(v) = out {
            prev = Some(v);
        }
    }
    let raw = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": list.cni_version }));
    CniResult::parse(raw).map_err(|source| CniError::Result {
        plugin: list.plugins.last().map_or(String::new(), |p| {
            p["type"].as_str().unwrap_or_default().to_owned()
        }),
        source,
    })
}

/// DEL: the list in reverse, each with the cached result. Every plugin runs even when one
/// fails (its allocation must not leak because another failed); the first error is returned.
pub async fn del(
    list: &ConfList,
    bins: &[PathBuf],
    rt: &Runtime,
    cached: Option<&Value>,
) -> Result<(), CniError> {
    let mut first = None;
    for p in list.plugins.iter().rev() {
        if let Err(e) = invoke(bins, &plugin_conf(list, p, cached), Op::Del, Some(rt)).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn needs(list: &ConfList, op: Op, min: &'static str) -> Result<(), CniError> {
    if version(&list.cni_version) < version(min) {
        return Err(CniError::Version {
            op: op.as_str(),
            needs: min,
            network: list.name.clone(),
            has: list.cni_version.clone(),
        });
    }
    Ok(())
}

/// CHECK (spec 0.4.0 and later): the list in order, each with the cached result.
pub async fn check(
    list: &ConfList,
    bins: &[PathBuf],
    rt: &Runtime,
    cached: &Value,
) -> Result<(), CniError> {
    needs(list, Op::Check, "0.4.0")?;
    if list.disable_check {
        return Ok(());
    }
    for p in &list.plugins {
        invoke(
            bins,
            &plugin_conf(list, p, Some(cached)),
            Op::Check,
            Some(rt),
        )
        .await?;
    }
    Ok(())
}

/// GC (spec 1.1.0): every plugin is told which attachments are still valid; it frees the rest.
/// Lists of earlier versions and those with `disableGC` are left alone.
pub async fn gc(
    list: &ConfList,
    bins: &[PathBuf],
    valid: &[(String, String)],
) -> Result<bool, CniError> {
    if version(&list.cni_version) < version("1.1.0") || list.disable_gc {
        return Ok(false);
    }
    let attachments: Vec<Value> = valid
        .iter()
        .map(|(id, ifname)| serde_json::json!({ "containerID": id, "ifname": ifname }))
        .collect();
    for p in &list.plugins {
        let mut c = plugin_conf(list, p, None);
        c["cni.dev/valid-attachments"] = attachments.clone().into();
        invoke(bins, &c, Op::Gc, None).await?;
    }
    Ok(true)
}

/// STATUS (spec 1.1.0): whether every plugin of the list is ready for ADDs.
pub async fn status(list: &ConfList, bins: &[PathBuf]) -> Result<(), CniError> {
    needs(list, Op::Status, "1.1.0")?;
    for p in &list.plugins {
        invoke(bins, &plugin_conf(list, p, None), Op::Status, None).await?;
    }
    Ok(())
}

/// The bin dirs, for messages.
pub fn describe(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d: &PathBuf| Path::display(d).to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version("0.4.0") < version("1.0.0"));
        assert!(version("0.10.0") > version("0.4.0"));
        assert!(version("1.1.0") >= version("1.1.0"));
    }

    #[test]
    fn each_plugin_gets_the_lists_name_version_and_the_previous_result() {
        let list = ConfList {
            name: "pods".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![serde_json::json!({"type": "bridge", "bridge": "cni0"})],
            disable_check: false,
            disable_gc: false,
            source: "x".into(),
        };
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_conf(&list, &list.plugins[0], Some(&prev));
        assert_eq!(c["name"], "pods");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["bridge"], "cni0");
        assert_eq!(c["prevResult"], prev);
        assert!(plugin_conf(&list, &list.plugins[0], None)
            .get("prevResult")
            .is_none());
    }
}
