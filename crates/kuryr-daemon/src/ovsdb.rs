//! A small OVSDB client (RFC 7047) spoken straight on ovsdb-server's unix
//! socket: JSON-RPC `transact`, `monitor` of `Open_vSwitch.cur_cfg` (so a
//! change can be confirmed as applied by ovs-vswitchd), `echo` answered.
//!
//! Only what the daemon needs: add a port with its interface and
//! `external_ids` to a bridge (replacing a port of the same name in the same
//! transaction), delete a port, list the interfaces kuryr made.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, oneshot, watch};

/// The database every call is about.
const DB: &str = "Open_vSwitch";

/// `external_ids` key holding the CNI container id of a port kuryr made.
pub const CONTAINER_KEY: &str = "kuryr-container-id";

/// `external_ids` key holding the node whose daemon made the port.
pub const NODE_KEY: &str = "kuryr-node";

/// An OVSDB failure.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The socket cannot be reached or broke.
    #[error("ovsdb-server at {path}: {err}")]
    Io {
        /// Socket path.
        path: String,
        /// Cause.
        err: String,
    },
    /// The server refused a request or an operation.
    #[error("OVSDB {0}")]
    Refused(String),
    /// ovs-vswitchd did not apply the change in time.
    #[error("ovs-vswitchd did not apply configuration {want} within {secs}s (at {at})")]
    NotApplied {
        /// next_cfg waited for.
        want: i64,
        /// cur_cfg seen last.
        at: i64,
        /// Seconds waited.
        secs: u64,
    },
    /// The bridge does not exist.
    #[error("OVS bridge {0} does not exist")]
    NoBridge(String),
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Writer = Arc<Mutex<tokio::net::unix::OwnedWriteHalf>>;

/// One open JSON-RPC connection.
struct Conn {
    writer: Writer,
    pending: Pending,
    cur_cfg: Arc<watch::Sender<i64>>,
    /// Interface rows by uuid: (name, ofport; -1 while not attached).
    ifaces: Arc<watch::Sender<HashMap<String, (String, i64)>>>,
    alive: watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A port kuryr added, as read back from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsPort {
    /// Port (and interface) name.
    pub name: String,
    /// The interface's external_ids.
    pub external_ids: BTreeMap<String, String>,
}

/// Client of one ovsdb-server; reconnects on the next call after a failure.
pub struct Ovsdb {
    path: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    apply_timeout: Duration,
}

/// Routes one message from the server: a reply to its caller, an `update`
/// of the monitor to the cur_cfg watch, an `echo` back to the server.
fn dispatch(msg: Value, pending: &Pending, mon: &Monitored, writer: &Writer) {
    match msg.get("method").and_then(Value::as_str) {
        Some("update") => {
            if let Some(u) = msg["params"].get(1) {
                mon.apply(u);
            }
        }
        Some("echo") => {
            let reply = json!({"id": msg["id"], "result": msg["params"], "error": null});
            let w = writer.clone();
            tokio::spawn(async move {
                let _ = w.lock().await.write_all(reply.to_string().as_bytes()).await;
            });
        }
        Some(_) => {}
        None => {
            if let Some(id) = msg["id"].as_u64()
                && let Some(tx) = pending.lock().expect("pending lock").remove(&id)
            {
                let _ = tx.send(msg);
            }
        }
    }
}

/// What the monitor keeps current: `Open_vSwitch.cur_cfg` and every
/// interface's `ofport`.
#[derive(Clone)]
struct Monitored {
    cur_cfg: Arc<watch::Sender<i64>>,
    ifaces: Arc<watch::Sender<HashMap<String, (String, i64)>>>,
}

impl Monitored {
    /// Applies table updates (the monitor's first answer or an `update`).
    fn apply(&self, u: &Value) {
        if let Some(v) = first_cur_cfg(u) {
            self.cur_cfg.send_modify(|c| *c = (*c).max(v));
        }
        if let Some(rows) = u["Interface"].as_object() {
            self.ifaces.send_modify(|m| {
                for (uuid, row) in rows {
                    match row.get("new") {
                        Some(new) => {
                            let name = new["name"].as_str().unwrap_or_default().to_owned();
                            // an empty set while vswitchd has not looked yet
                            let ofport = new["ofport"].as_i64().unwrap_or(-1);
                            m.insert(uuid.clone(), (name, ofport));
                        }
                        None => {
                            m.remove(uuid);
                        }
                    }
                }
            });
        }
    }
}

/// `cur_cfg` in table updates `{"Open_vSwitch": {uuid: {"new": {...}}}}`.
fn first_cur_cfg(updates: &Value) -> Option<i64> {
    updates["Open_vSwitch"]
        .as_object()?
        .values()
        .find_map(|row| row["new"]["cur_cfg"].as_i64())
}

/// An OVSDB map from pairs.
fn ovs_map(m: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        m.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

/// Pairs of an OVSDB map value.
fn from_ovs_map(v: &Value) -> BTreeMap<String, String> {
    v.get(1)
        .and_then(Value::as_array)
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The uuid string of `["uuid", "..."]`.
fn uuid_of(v: &Value) -> Option<String> {
    (v[0] == "uuid").then(|| v[1].as_str().map(str::to_owned))?
}

impl Ovsdb {
    /// A client of the server listening on `path` (nothing is opened yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
            apply_timeout: Duration::from_secs(20),
        }
    }

    fn io(&self, err: impl std::fmt::Display) -> OvsdbError {
        OvsdbError::Io {
            path: self.path.display().to_string(),
            err: err.to_string(),
        }
    }

    async fn conn(&self) -> Result<Arc<Conn>, OvsdbError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && *c.alive.borrow()
        {
            return Ok(c.clone());
        }
        *guard = None;
        let c = Arc::new(self.connect().await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Conn, OvsdbError> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        let (mut rd, wr) = stream.into_split();
        let writer: Writer = Arc::new(Mutex::new(wr));
        let pending: Pending = Arc::default();
        let cur_cfg = Arc::new(watch::channel(i64::MIN).0);
        let ifaces = Arc::new(watch::channel(HashMap::new()).0);
        let mon = Monitored {
            cur_cfg: cur_cfg.clone(),
            ifaces: ifaces.clone(),
        };
        let (alive_tx, alive_rx) = watch::channel(true);
        let (p, cfg, w) = (pending.clone(), mon.clone(), writer.clone());
        let reader = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 65536];
            'read: loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut consumed = 0;
                let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                loop {
                    match it.next() {
                        Some(Ok(msg)) => {
                            consumed = it.byte_offset();
                            dispatch(msg, &p, &cfg, &w);
                        }
                        Some(Err(e)) if e.is_eof() => break,
                        // garbage on the stream: give up on this connection
                        Some(Err(_)) => break 'read,
                        None => break,
                    }
                }
                buf.drain(..consumed);
            }
            let _ = alive_tx.send(false);
            // dropping the reply senders wakes every caller with an error
            p.lock().expect("pending lock").clear();
        });
        let conn = Conn {
            writer,
            pending,
            cur_cfg,
            ifaces,
            alive: alive_rx,
            reader,
        };
        let initial = self
            .call_on(
                &conn,
                "monitor",
                json!([DB, "kuryr-daemon", {
                    "Open_vSwitch": {"columns": ["cur_cfg"]},
                    "Interface": {"columns": ["name", "ofport"]},
                }]),
            )
            .await?;
        mon.apply(&initial);
        Ok(conn)
    }

    /// Sends one request on `conn` and waits for its reply's `result`.
    async fn call_on(&self, conn: &Conn, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let req = json!({"method": method, "params": params, "id": id});
        {
            let mut w = conn.writer.lock().await;
            if let Err(e) = w.write_all(req.to_string().as_bytes()).await {
                conn.pending.lock().expect("pending lock").remove(&id);
                return Err(self.io(e));
            }
        }
        let reply = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(self.io("connection closed")),
            Err(_) => {
                conn.pending.lock().expect("pending lock").remove(&id);
                return Err(self.io(format!("no answer to {method} within 30s")));
            }
        };
        if !reply["error"].is_null() {
            return Err(OvsdbError::Refused(format!("{method}: {}", reply["error"])));
        }
        Ok(reply["result"].clone())
    }

    /// Runs one transaction; an operation's error fails the whole call.
    pub async fn transact(&self, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let conn = self.conn().await?;
        let n_ops = ops.len();
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let result = self
            .call_on(&conn, "transact", Value::Array(params))
            .await?;
        transaction_results(&result, n_ops)
    }

    /// Reachable and answering (a no-op transaction).
    pub async fn ping(&self) -> Result<(), OvsdbError> {
        self.transact(vec![]).await.map(|_| ())
    }

    /// The `_uuid` of the port named `name`, if any.
    async fn port_uuid(&self, name: &str) -> Result<Option<String>, OvsdbError> {
        let r = self
            .transact(vec![json!({
                "op": "select", "table": "Port",
                "where": [["name", "==", name]], "columns": ["_uuid"],
            })])
            .await?;
        Ok(r[0]["rows"].get(0).and_then(|row| uuid_of(&row["_uuid"])))
    }

    /// Waits until ovs-vswitchd has applied configuration `want`.
    async fn wait_applied(&self, want: i64) -> Result<(), OvsdbError> {
        let conn = self.conn().await?;
        let mut rx = conn.cur_cfg.subscribe();
        let secs = self.apply_timeout.as_secs();
        let r = tokio::time::timeout(self.apply_timeout, rx.wait_for(|c| *c >= want))
            .await
            .map(|r| r.map(|_| ()));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.io("connection closed while waiting for ovs-vswitchd")),
            Err(_) => Err(OvsdbError::NotApplied {
                want,
                at: *rx.borrow(),
                secs,
            }),
        }
    }

    /// Waits until interface `name` is attached (ofport > 0). ovs-vswitchd
    /// retries an interface whose device did not exist yet as soon as the
    /// device appears.
    pub async fn wait_attached(&self, name: &str) -> Result<(), OvsdbError> {
        let conn = self.conn().await?;
        let mut rx = conn.ifaces.subscribe();
        let attached =
            |m: &HashMap<String, (String, i64)>| m.values().any(|(n, of)| n == name && *of > 0);
        let secs = self.apply_timeout.as_secs();
        match tokio::time::timeout(self.apply_timeout, rx.wait_for(attached)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.io("connection closed while waiting for ovs-vswitchd")),
            Err(_) => Err(OvsdbError::Refused(format!(
                "interface {name} not attached by ovs-vswitchd within {secs}s"
            ))),
        }
    }

    /// Ops that bump `next_cfg` and read it back (last result).
    fn bump() -> [Value; 2] {
        [
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                   "mutations": [["next_cfg", "+=", 1]]}),
            json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}),
        ]
    }

    /// Adds port `name` (its interface of `iface_type`, "" for a system
    /// device) to `bridge` with `external_ids` on the interface, replacing a
    /// port of that name wherever it is, in one transaction; returns once
    /// ovs-vswitchd has applied it.
    pub async fn add_port(
        &self,
        bridge: &str,
        name: &str,
        iface_type: &str,
        external_ids: &BTreeMap<String, String>,
    ) -> Result<(), OvsdbError> {
        for attempt in 0.. {
            // first try assumes the usual case, no such port (saves a round trip)
            let old = if attempt == 0 {
                None
            } else {
                self.port_uuid(name).await?
            };
            // the port must still be what we saw (or still absent)
            let rows = match &old {
                Some(u) => json!([{"_uuid": ["uuid", u]}]),
                None => json!([]),
            };
            let mut ops = vec![
                json!({"op": "wait", "timeout": 0, "table": "Port",
                       "where": [["name", "==", name]], "columns": ["_uuid"],
                       "until": "==", "rows": rows}),
                json!({"op": "select", "table": "Bridge",
                       "where": [["name", "==", bridge]], "columns": ["_uuid"]}),
            ];
            if let Some(u) = &old {
                ops.push(json!({"op": "mutate", "table": "Bridge", "where": [],
                    "mutations": [["ports", "delete", ["uuid", u]]]}));
            }
            ops.push(
                json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                "row": {"name": name, "type": iface_type, "external_ids": ovs_map(external_ids)}}),
            );
            ops.push(json!({"op": "insert", "table": "Port", "uuid-name": "port",
                "row": {"name": name, "interfaces": ["named-uuid", "iface"]}}));
            ops.push(json!({"op": "mutate", "table": "Bridge",
                "where": [["name", "==", bridge]],
                "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}));
            ops.extend(Self::bump());
            match self.transact(ops).await {
                Ok(r) => {
                    if r[1]["rows"].as_array().is_none_or(|a| a.is_empty()) {
                        return Err(OvsdbError::NoBridge(bridge.into()));
                    }
                    let want = r.last().and_then(|x| x["rows"][0]["next_cfg"].as_i64());
                    let t = std::time::Instant::now();
                    return match want {
                        Some(w) => self.wait_applied(w).await.inspect(|_| {
                            tracing::debug!(port = name, wait = ?t.elapsed(), "ovs-vswitchd applied the port");
                        }),
                        None => Err(OvsdbError::Refused("next_cfg not returned".into())),
                    };
                }
                // someone changed the port between our read and write
                Err(OvsdbError::Refused(m)) if m.contains("timed out") && attempt < 5 => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Sets keys of interface `name`'s external_ids (others are kept). Not
    /// a datapath change: nothing to wait for.
    pub async fn set_external_ids(
        &self,
        name: &str,
        ids: &BTreeMap<String, String>,
    ) -> Result<(), OvsdbError> {
        let keys: Vec<&String> = ids.keys().collect();
        self.transact(vec![
            json!({"op": "mutate", "table": "Interface", "where": [["name", "==", name]],
                   "mutations": [["external_ids", "delete", ["set", keys]]]}),
            json!({"op": "mutate", "table": "Interface", "where": [["name", "==", name]],
                   "mutations": [["external_ids", "insert", ovs_map(ids)]]}),
        ])
        .await
        .map(|_| ())
    }

    /// Deletes port `name` from whatever bridge holds it; `Ok(false)` when
    /// there was none. Returns once ovs-vswitchd has applied it.
    pub async fn del_port(&self, name: &str) -> Result<bool, OvsdbError> {
        let Some(u) = self.port_uuid(name).await? else {
            return Ok(false);
        };
        let mut ops = vec![json!({"op": "mutate", "table": "Bridge", "where": [],
            "mutations": [["ports", "delete", ["uuid", u]]]})];
        ops.extend(Self::bump());
        let r = self.transact(ops).await?;
        if let Some(w) = r.last().and_then(|x| x["rows"][0]["next_cfg"].as_i64()) {
            self.wait_applied(w).await?;
        }
        Ok(true)
    }

    /// Interfaces whose external_ids carry `key` (e.g. [`CONTAINER_KEY`]).
    pub async fn ports_with(&self, key: &str) -> Result<Vec<OvsPort>, OvsdbError> {
        let r = self
            .transact(vec![json!({"op": "select", "table": "Interface",
                "where": [], "columns": ["name", "external_ids"]})])
            .await?;
        Ok(r[0]["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let ids = from_ovs_map(&row["external_ids"]);
                ids.contains_key(key).then(|| OvsPort {
                    name: row["name"].as_str().unwrap_or_default().to_owned(),
                    external_ids: ids,
                })
            })
            .collect())
    }

    /// The external_ids of interface `name`, `None` when it does not exist.
    pub async fn interface(&self, name: &str) -> Result<Option<OvsPort>, OvsdbError> {
        let r = self
            .transact(vec![json!({"op": "select", "table": "Interface",
                "where": [["name", "==", name]], "columns": ["name", "external_ids", "ofport"]})])
            .await?;
        Ok(r[0]["rows"].get(0).map(|row| OvsPort {
            name: name.to_owned(),
            external_ids: from_ovs_map(&row["external_ids"]),
        }))
    }
}

/// The results of a transaction of `ops` operations: one per operation (a
/// server answering fewer, or something else than a list, is refused, so
/// callers may index them), or the first error it reports.
fn transaction_results(result: &Value, ops: usize) -> Result<Vec<Value>, OvsdbError> {
    let results = result.as_array().cloned().ok_or_else(|| {
        OvsdbError::Refused(format!("transaction answered {result} instead of a list"))
    })?;
    if let Some(bad) = results
        .iter()
        .find(|r| r.get("error").is_some_and(|e| !e.is_null()))
    {
        return Err(OvsdbError::Refused(format!(
            "transaction failed: {} {}",
            bad["error"].as_str().unwrap_or_default(),
            bad["details"].as_str().unwrap_or_default()
        )));
    }
    if results.len() < ops {
        return Err(OvsdbError::Refused(format!(
            "transaction answered {} results for {ops} operations",
            results.len()
        )));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ovsdb_values() {
        let m: BTreeMap<String, String> = [("iface-id".to_string(), "p1".to_string())].into();
        let v = ovs_map(&m);
        assert_eq!(v, json!(["map", [["iface-id", "p1"]]]));
        assert_eq!(from_ovs_map(&v), m);
        assert_eq!(from_ovs_map(&json!(["map", []])), BTreeMap::new());
        assert_eq!(uuid_of(&json!(["uuid", "abc"])), Some("abc".into()));
        assert_eq!(uuid_of(&json!(["named-uuid", "abc"])), None);
        let upd = json!({"Open_vSwitch": {"u1": {"new": {"cur_cfg": 7}}}});
        assert_eq!(first_cur_cfg(&upd), Some(7));
        assert_eq!(first_cur_cfg(&json!({"Bridge": {}})), None);
    }

    #[test]
    fn short_or_failed_transactions_are_errors_not_panics() {
        let ok = json!([{"rows": []}]);
        assert_eq!(transaction_results(&ok, 1).unwrap().len(), 1);
        assert_eq!(transaction_results(&json!([]), 0).unwrap().len(), 0);
        for (answer, ops, says) in [
            (json!([]), 1, "0 results for 1 operations"),
            (json!(null), 1, "instead of a list"),
            (json!({"rows": []}), 1, "instead of a list"),
            (
                json!([{"rows": []}, {"error": "constraint violation", "details": "x"}]),
                1,
                "constraint violation x",
            ),
        ] {
            let e = transaction_results(&answer, ops).unwrap_err().to_string();
            assert!(e.contains(says), "{answer}: {e}");
        }
    }
}
