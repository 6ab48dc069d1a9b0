//! Leader election against the stack's real kube-apiserver: a second
//! contender waits while the leader renews and takes over at once when it
//! releases; after a crash it takes over only once the Lease expired; a
//! leader whose Lease is taken from under it notices within a couple of
//! renews; a peer whose clock is an hour behind keeps its Lease while it
//! renews; a leader cut off from the API server stops leading before its
//! Lease expires; a process not allowed to touch Leases gets an error
//! instead of waiting forever.
#![cfg(feature = "stack")]

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Config};
use kuryr_controller::leader::{self, Leadership, LeaseConfig};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{finally, unique_name};
use std::future::Future;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(200);

async fn kube_config() -> anyhow::Result<Config> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kuryr_controller=debug")
        .try_init();
    let env = StackEnv::load()?;
    env.require("k8s")?;
    let kc = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG")?)?;
    Ok(Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

async fn client() -> anyhow::Result<Client> {
    Ok(Client::try_from(kube_config().await?)?)
}

fn cfg(name: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "default".into(),
        name: name.into(),
        identity: identity.into(),
        lease_duration: LEASE,
        renew_interval: RENEW,
        retry_interval: RETRY,
    }
}

/// A contender waiting in the background; stopped when dropped.
struct Contender(JoinHandle<Result<Leadership, leader::Error>>);

impl Contender {
    fn start(client: &Client, cfg: LeaseConfig) -> Self {
        Self(tokio::spawn(leader::acquire(client.clone(), cfg)))
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn acquire(client: &Client, cfg: LeaseConfig) -> anyhow::Result<Leadership> {
    let who = cfg.identity.clone();
    Ok(timeout(
        Duration::from_secs(15),
        leader::acquire(client.clone(), cfg),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{who} did not acquire a free Lease in 15 s"))??)
}

/// A fresh Lease name.
fn lease_name() -> String {
    unique_name("kuryr-leader-test-", 60)
}

/// Runs `body`, then deletes the Lease `name` in `default`.
async fn with_lease(
    client: &Client,
    name: &str,
    body: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    finally(body, async {
        match leases.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

fn micros(t: &Option<MicroTime>) -> i64 {
    t.as_ref().map(|t| t.0.as_microsecond()).unwrap_or_default()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(l: &Lease) -> i32 {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(-1)
}

#[tokio::test]
async fn second_contender_waits_and_takes_over_on_release() -> anyhow::Result<()> {
    let client = client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = lease_name();
    let name = name.as_str();
    with_lease(&client, name, async {
        let a = acquire(&client, cfg(name, "contender-a")).await?;
        assert!(a.is_leader());
        let first = leases.get(name).await?;
        assert_eq!(holder(&first), Some("contender-a"));
        let spec = first.spec.clone().unwrap_or_default();
        assert_eq!(spec.lease_duration_seconds, Some(3));
        assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

        let mut b = Contender::start(&client, cfg(name, "contender-b"));
        // two lease durations: B must still wait, since A keeps renewing
        assert!(
            timeout(2 * LEASE, &mut b.0).await.is_err(),
            "B acquired a Lease that A was renewing"
        );
        assert!(a.is_leader());
        let renewed = leases.get(name).await?;
        assert_eq!(holder(&renewed), Some("contender-a"));
        assert!(
            micros(&renewed.spec.as_ref().unwrap().renew_time) > micros(&spec.renew_time),
            "A did not renew"
        );

        let a_handle = a.handle();
        let released = Instant::now();
        a.release().await;
        assert!(!a_handle.is_leader());
        timeout(Duration::from_millis(100), a_handle.lost())
            .await
            .map_err(|_| anyhow::anyhow!("lost() did not resolve after release"))?;
        let b_lead = timeout(LEASE, &mut b.0)
            .await
            .map_err(|_| anyhow::anyhow!("B did not take over within the lease duration"))???;
        let waited = released.elapsed();
        assert!(
            waited < LEASE / 2,
            "B took {waited:?} to take over a released Lease"
        );
        assert!(b_lead.is_leader());
        let after = leases.get(name).await?;
        assert_eq!(holder(&after), Some("contender-b"));
        assert_eq!(transitions(&after), transitions(&first) + 1);
        let s = after.spec.as_ref().unwrap();
        assert!(micros(&s.acquire_time) > micros(&renewed.spec.as_ref().unwrap().renew_time));

        // B gives it up too: nobody holds it, transitions unchanged
        b_lead.release().await;
        let last = leases.get(name).await?;
        assert_eq!(holder(&last), None);
        assert_eq!(transitions(&last), transitions(&after));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn after_a_crash_the_lease_is_taken_only_once_expired() -> anyhow::Result<()> {
    let client = client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = lease_name();
    let name = name.as_str();
    with_lease(&client, name, async {
        let a = acquire(&client, cfg(name, "crashing-a")).await?;
        // let it renew at least once
        tokio::time::sleep(RENEW + RENEW / 2).await;
        let a_handle = a.handle();
        drop(a);
        assert!(!a_handle.is_leader(), "a dropped Leadership still leads");
        // (a renew in flight at the drop lands by then)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let crashed = leases.get(name).await?;
        assert_eq!(holder(&crashed), Some("crashing-a"));
        let last_renew = micros(&crashed.spec.as_ref().unwrap().renew_time);
        tokio::time::sleep(2 * RENEW).await;
        let later = leases.get(name).await?;
        assert_eq!(
            micros(&later.spec.as_ref().unwrap().renew_time),
            last_renew,
            "a dropped Leadership still renews"
        );
        assert_eq!(
            holder(&later),
            Some("crashing-a"),
            "drop released the Lease"
        );

        // B has never seen the Lease change: it waits a full Lease duration
        // on its own clock from its first look, then takes it at its next try
        let started = Instant::now();
        let b = acquire(&client, cfg(name, "successor-b")).await?;
        let waited = started.elapsed();
        let taken = leases.get(name).await?;
        assert_eq!(holder(&taken), Some("successor-b"));
        assert_eq!(transitions(&taken), transitions(&crashed) + 1);
        assert!(
            waited > LEASE,
            "B took the Lease {waited:?} after its first look, before a Lease duration"
        );
        assert!(
            waited <= LEASE + 2 * RETRY + Duration::from_secs(2),
            "B took the Lease only {waited:?} after its first look"
        );
        b.release().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_peer_with_a_skewed_clock_keeps_its_lease_while_it_renews() -> anyhow::Result<()> {
    let client = client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = lease_name();
    let name = name.as_str();
    with_lease(&client, name, async {
        // the peer writes its Lease every RENEW with a renewTime an hour
        // behind this machine's clock
        let skewed = || {
            let t = Timestamp::from_microsecond(now_micros() - 3_600_000_000).unwrap();
            serde_json::json!({"holderIdentity": "skewed-peer", "leaseDurationSeconds": LEASE.as_secs(),
                "renewTime": MicroTime(t), "acquireTime": MicroTime(t), "leaseTransitions": 0})
        };
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": skewed()}))?,
            )
            .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let peer = {
            let (leases, stop, name) = (leases.clone(), stop.clone(), name.to_owned());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(RENEW).await;
                    let _ = leases
                        .patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(serde_json::json!({"spec": skewed()})))
                        .await;
                }
            })
        };
        let mut c = Contender::start(&client, cfg(name, "contender-c"));
        // a contender trusting renewTime would take it at its first try; one
        // measuring on its own clock never does while the peer renews:
        // three Lease durations are many renews and many tries
        tokio::time::sleep(3 * LEASE).await;
        assert!(!c.0.is_finished(), "the contender took a Lease its holder keeps renewing");
        assert_eq!(holder(&leases.get(name).await?), Some("skewed-peer"));
        // the peer stops renewing: the contender takes it a Lease duration later
        stop.store(true, Ordering::SeqCst);
        peer.await?;
        let stopped = Instant::now();
        let won = timeout(LEASE + 2 * RETRY + Duration::from_secs(3), &mut c.0)
            .await
            .map_err(|_| anyhow::anyhow!("not taken {:?} after the peer stopped", stopped.elapsed()))???;
        assert_eq!(holder(&leases.get(name).await?), Some("contender-c"));
        won.release().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_leader_notices_its_lease_taken() -> anyhow::Result<()> {
    let client = client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = lease_name();
    let name = name.as_str();
    with_lease(&client, name, async {
        let a = acquire(&client, cfg(name, "robbed-a")).await?;
        let a_handle = a.handle();
        // somebody else writes itself in (retrying against A's renews)
        let mut stolen = None;
        for _ in 0..10 {
            let mut l = leases.get(name).await?;
            let spec = l.spec.as_mut().unwrap();
            spec.holder_identity = Some("someone-else".into());
            spec.renew_time = Some(MicroTime(Timestamp::from_microsecond(now_micros())?));
            match leases.replace(name, &PostParams::default(), &l).await {
                Ok(_) => {
                    stolen = Some(Instant::now());
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let stolen = stolen.ok_or_else(|| anyhow::anyhow!("could not write the Lease"))?;
        timeout(2 * RENEW + RENEW / 2, a.lost())
            .await
            .map_err(|_| anyhow::anyhow!("A did not notice its Lease taken"))?;
        let noticed = stolen.elapsed();
        assert!(
            noticed <= 2 * RENEW + RENEW / 2,
            "noticed after {noticed:?}"
        );
        assert!(!a.is_leader());
        assert!(!a_handle.is_leader());
        timeout(Duration::from_millis(100), a_handle.lost())
            .await
            .map_err(|_| anyhow::anyhow!("a handle's lost() did not resolve"))?;
        // A neither writes itself back nor, releasing, clears the other's hold
        tokio::time::sleep(RENEW + RENEW / 2).await;
        assert_eq!(holder(&leases.get(name).await?), Some("someone-else"));
        a.release().await;
        assert_eq!(holder(&leases.get(name).await?), Some("someone-else"));
        Ok(())
    })
    .await
}

/// A TCP forwarder on loopback to the API server that can be cut: then it
/// closes the connections it carries and refuses new ones.
struct Cuttable {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cuttable {
    fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, cs) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            // ends when cut (the listener closes with it)
            while !c.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => return,
                };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let mut all = cs.lock().unwrap();
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                all.push(client);
                all.push(server);
            }
        });
        Ok(Self { port, cut, conns })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test]
async fn a_leader_cut_off_stops_leading_before_its_lease_expires() -> anyhow::Result<()> {
    let client = client().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let mut config = kube_config().await?;
    let host = config.cluster_url.host().unwrap_or("127.0.0.1").to_string();
    let target = (host.as_str(), config.cluster_url.port_u16().unwrap_or(443))
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address for {host}"))?;
    let proxy = Cuttable::start(target)?;
    // the same host (the certificate names it), through the forwarder
    config.cluster_url = format!("https://{host}:{}", proxy.port).parse()?;
    let proxied = Client::try_from(config)?;
    let name = lease_name();
    let name = name.as_str();
    with_lease(&client, name, async {
        let a = acquire(&proxied, cfg(name, "cut-off-a")).await?;
        tokio::time::sleep(RENEW + RENEW / 2).await;
        assert!(a.is_leader());
        proxy.cut();
        let cut = Instant::now();
        timeout(LEASE + RENEW, a.lost()).await.map_err(|_| {
            anyhow::anyhow!("A still leads {:?} after being cut off", LEASE + RENEW)
        })?;
        let lost_at = now_micros();
        let after = cut.elapsed();
        assert!(!a.is_leader());
        // not at the first failed renew: only once the lease ran out
        assert!(
            after >= LEASE - RENEW - Duration::from_millis(200),
            "gave up after {after:?}, before the lease ran out"
        );
        // and no later than the others may take it over
        let l = leases.get(name).await?;
        assert_eq!(holder(&l), Some("cut-off-a"));
        let expires = micros(&l.spec.as_ref().unwrap().renew_time) + LEASE.as_micros() as i64;
        assert!(
            lost_at <= expires + 100_000,
            "A still led {} ms after its Lease expired",
            (lost_at - expires) / 1000
        );
        drop(a);
        // a successor takes it over (A's last renew is the one it saw)
        let b = acquire(&client, cfg(name, "successor-b")).await?;
        assert_eq!(holder(&leases.get(name).await?), Some("successor-b"));
        b.release().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn forbidden_is_an_error_not_a_wait() -> anyhow::Result<()> {
    let mut config = kube_config().await?;
    config.auth_info.impersonate = Some("kuryr-leader-test-nobody".into());
    let nobody = Client::try_from(config)?;
    let name = lease_name();
    let res = timeout(
        Duration::from_secs(10),
        leader::acquire(nobody, cfg(&name, "nobody")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("acquire kept waiting on 403 Forbidden"))?;
    match res {
        Err(leader::Error::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 403 => Ok(()),
        Err(e) => anyhow::bail!("expected 403 Forbidden, got {e}"),
        Ok(_) => anyhow::bail!("a user without rights acquired a Lease"),
    }
}
