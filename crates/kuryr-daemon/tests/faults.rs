//! Bad input, a VIF that never comes, a clash, a daemon killed mid-ADD or
//! restarted, and garbage collection: each ends with a clear CNI error or a
//! working pod, and nothing left behind.
#![cfg(feature = "stack")]

mod common;

use common::*;
use kuryr_stack_tests::net::Netns;
use std::time::Duration;

#[tokio::test]
async fn bad_input_gets_a_cni_error_and_leaves_nothing() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let d = Daemon::start(&env, &[("KURYR_CNI_DAEMON__VIF_ANNOTATION_TIMEOUT", "2")])?;
        let pod_ns = Netns::new("kdf")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let call = CniCall {
            command: "ADD",
            container_id: "cid-bad-1",
            netns: &netns,
            ifname: "eth0",
            pod: (&ns, "pod-never", "uid-never"),
        };
        let conf = d.conf("1.0.0");
        // malformed JSON, unknown version, missing CNI_NETNS: refused by the plugin
        let (rc, out) = cni_raw(&call, b"{\"cniVersion\": ");
        assert_eq!((rc, out["code"].as_u64()), (1, Some(6)), "{out}");
        let mut bad = conf.clone();
        bad["cniVersion"] = "9.9.9".into();
        let (rc, out) = cni(&call, &bad);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(1)), "{out}");
        let (rc, out) = cni(&CniCall { netns: "", ..call }, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(4)), "{out}");
        let (rc, out) = cni(
            &CniCall {
                ifname: "way-too-long-name0",
                ..call
            },
            &conf,
        );
        assert_eq!((rc, out["code"].as_u64()), (1, Some(4)), "{out}");
        // no KuryrPort ever: try again later, after the configured 2 s
        let t = std::time::Instant::now();
        let (rc, out) = cni(&call, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(11)), "{out}");
        assert!(out["msg"].as_str().unwrap().contains("VIF"), "{out}");
        assert!(t.elapsed() >= Duration::from_secs(2));
        // a KuryrPort of another pod with the same name (other UID) does not count
        kuryrport(
            &client,
            &ns,
            "pod-never",
            "uid-other",
            &d.node,
            Some(fake_vif(20, "10.250.2.0/24", true)),
        )
        .await?;
        let (rc, out) = cni(&call, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(11)), "{out}");
        // a VIF that never goes ACTIVE: unplugged again after the timeout
        let vif = fake_vif(21, "10.250.2.0/24", false);
        kuryrport(
            &client,
            &ns,
            "pod-down",
            "uid-down",
            &d.node,
            Some(vif.clone()),
        )
        .await?;
        let down = CniCall {
            container_id: "cid-bad-2",
            pod: (&ns, "pod-down", "uid-down"),
            ..call
        };
        let (rc, out) = cni(&down, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(11)), "{out}");
        assert!(out["msg"].as_str().unwrap().contains("ACTIVE"), "{out}");
        let tap = kuryr_crds::vif::vif_name(&vif.id);
        assert!(!link_exists(&tap));
        assert!(ovs_ports_of(&env, "cid-bad-2").is_empty());
        assert!(
            pod_ns.ip(&["link", "show", "eth0"]).is_err(),
            "eth0 left in the pod"
        );
        // the netns is gone
        let vif = fake_vif(22, "10.250.2.0/24", true);
        kuryrport(
            &client,
            &ns,
            "pod-gone",
            "uid-gone",
            &d.node,
            Some(vif.clone()),
        )
        .await?;
        let gone = CniCall {
            container_id: "cid-bad-3",
            netns: "/var/run/netns/kuryr-no-such-netns",
            pod: (&ns, "pod-gone", "uid-gone"),
            ..call
        };
        let (rc, out) = cni(&gone, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(102)), "{out}");
        // an eth0 that is not ours in the pod: a clash, nothing made
        pod_ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "notours0",
        ])?;
        let clash = CniCall {
            container_id: "cid-bad-4",
            netns: &netns,
            ..gone
        };
        let (rc, out) = cni(&clash, &conf);
        assert_eq!((rc, out["code"].as_u64()), (1, Some(101)), "{out}");
        assert!(
            pod_ns
                .ip(&["link", "show", "eth0"])?
                .contains("eth0@notours0")
        );
        let tap = kuryr_crds::vif::vif_name(&vif.id);
        assert!(!link_exists(&tap));
        for c in ["cid-bad-1", "cid-bad-2", "cid-bad-3", "cid-bad-4"] {
            assert!(ovs_ports_of(&env, c).is_empty(), "{c}");
        }
        assert!(d.state_files().is_empty(), "{:?}", d.state_files());
        // DEL of what never was, and DEL without a netns, succeed
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                netns: "",
                ..clash
            },
            &conf,
        );
        assert_eq!(rc, 0, "{out}");
        // STATUS is fine, GC with nothing to do too
        let (rc, out) = cni(
            &CniCall {
                command: "STATUS",
                ..call
            },
            &d.conf("1.1.0"),
        );
        assert_eq!(rc, 0, "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn restart_keeps_pods_and_a_kill_mid_add_recovers() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let mut d = Daemon::start(&env, &[])?;
        let conf = d.conf("1.1.0");
        // a plugged pod survives a SIGKILL of the daemon untouched
        let vif = fake_vif(30, "10.250.3.0/24", true);
        kuryrport(&client, &ns, "pod-r", "uid-r", &d.node, Some(vif.clone())).await?;
        let pod_ns = Netns::new("kdr")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let call = CniCall {
            command: "ADD",
            container_id: "cid-r-1",
            netns: &netns,
            ifname: "eth0",
            pod: (&ns, "pod-r", "uid-r"),
        };
        let (rc, first) = cni(&call, &conf);
        assert_eq!(rc, 0, "{first}");
        let tap = kuryr_crds::vif::vif_name(&vif.id);
        let idx = std::fs::read_to_string(format!("/sys/class/net/{tap}/ifindex"))?;
        let pod_idx = pod_ns.ip(&["-o", "link", "show", "eth0"])?;
        d.kill();
        d.spawn(&env)?;
        assert_eq!(
            idx,
            std::fs::read_to_string(format!("/sys/class/net/{tap}/ifindex"))?
        );
        assert_eq!(pod_idx, pod_ns.ip(&["-o", "link", "show", "eth0"])?);
        let (rc, out) = cni(
            &CniCall {
                command: "CHECK",
                ..call
            },
            &conf,
        );
        assert_eq!(rc, 0, "CHECK after restart: {out}");
        let (rc, again) = cni(&call, &conf);
        assert_eq!((rc, &again), (0, &first));
        assert_eq!(ovs_ports_of(&env, "cid-r-1"), vec![tap.clone()]);

        // killed while an ADD waits for its VIF: the runtime's retry works
        kuryrport(&client, &ns, "pod-k", "uid-k", &d.node, None).await?;
        let pod_k = Netns::new("kdk")?;
        let netns_k = format!("/var/run/netns/{}", pod_k.name);
        let call_k = CniCall {
            container_id: "cid-k-1",
            netns: &netns_k,
            pod: (&ns, "pod-k", "uid-k"),
            ..call
        };
        let pending = {
            let conf = conf.clone();
            let (cid, nsn, pns) = ("cid-k-1".to_string(), netns_k.clone(), ns.clone());
            std::thread::spawn(move || {
                let c = CniCall {
                    command: "ADD",
                    container_id: &cid,
                    netns: &nsn,
                    ifname: "eth0",
                    pod: (&pns, "pod-k", "uid-k"),
                };
                cni(&c, &conf)
            })
        };
        // the ADD is in flight in the daemon (not a daemon simply down)
        wait_adds_waiting(&d, 1).await?;
        d.kill();
        let (rc, out) = pending.join().unwrap();
        assert_eq!(rc, 1, "{out}");
        assert_eq!(out["code"], 11, "a dead daemon means try again: {out}");
        let vif_k = fake_vif(31, "10.250.3.0/24", true);
        set_vif(&client, &ns, "pod-k", &vif_k).await?;
        d.spawn(&env)?;
        let (rc, out) = cni(&call_k, &conf);
        assert_eq!(rc, 0, "{out}");
        assert_eq!(ovs_ports_of(&env, "cid-k-1").len(), 1);

        // an attachment left half-made (crash between two steps) is replaced
        d.kill();
        let state = d.dir.join("state").join("cid-k-1_eth0.json");
        let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
        rec["phase"] = "plugging".into();
        std::fs::write(&state, serde_json::to_vec(&rec)?)?;
        d.spawn(&env)?;
        let (rc, out) = cni(&call_k, &conf);
        assert_eq!(rc, 0, "ADD over a half-made attachment: {out}");
        assert_eq!(ovs_ports_of(&env, "cid-k-1").len(), 1);
        let (rc, out) = cni(
            &CniCall {
                command: "CHECK",
                ..call_k
            },
            &conf,
        );
        assert_eq!(rc, 0, "{out}");

        // GC: the sandbox of pod-r vanished without a DEL; a restart's GC
        // removes its OVS port, host link and record
        drop(pod_ns);
        d.kill();
        d.spawn(&env)?;
        kuryr_stack_tests::wait_until(
            "GC of the vanished pod",
            Duration::from_secs(20),
            Duration::from_millis(200),
            || async {
                // (the pod still has its KuryrPort: its VIF may be plugged
                // ahead again for the next sandbox, under the prepared owner)
                let reprepared =
                    ovs_ports_of(&env, &format!("prepared-{}", vif.id)) == vec![tap.clone()];
                Ok(
                    (ovs_ports_of(&env, "cid-r-1").is_empty()
                        && (reprepared || !link_exists(&tap)))
                    .then_some(()),
                )
            },
        )
        .await?;
        assert_eq!(d.state_files(), vec!["cid-k-1_eth0.json".to_string()]);
        let m = http_get(&d.metrics, "/metrics")?;
        assert!(m.contains("kuryr_cni_gc_removed_total 1"), "{m}");
        // an OVS port tagged by kuryr that no record knows is collected too
        let _orphan = kuryr_stack_tests::net::OvsPort::add(
            env.get("OVSDB_SOCK")?,
            "br-int",
            "kdorphan0",
            &[
                ("kuryr-container-id", "cid-orphan"),
                ("kuryr-node", &d.node),
            ],
        )?;
        assert_eq!(ovs_ports_of(&env, "cid-orphan").len(), 1);
        d.kill();
        d.spawn(&env)?;
        kuryr_stack_tests::wait_until(
            "GC of the orphan OVS port",
            Duration::from_secs(20),
            Duration::from_millis(200),
            || async { Ok(ovs_ports_of(&env, "cid-orphan").is_empty().then_some(())) },
        )
        .await?;
        // CNI GC of another network, and one whose list is malformed, leave
        // the running pod untouched
        for (name, valid, rc_want) in [
            ("other-network", serde_json::json!([]), 0),
            ("kuryr", serde_json::json!("notalist"), 1),
        ] {
            let mut gc = d.conf("1.1.0");
            gc["name"] = name.into();
            gc["cni.dev/valid-attachments"] = valid;
            let (rc, out) = cni(
                &CniCall {
                    command: "GC",
                    ..call_k
                },
                &gc,
            );
            assert_eq!(rc, rc_want, "GC {name}: {out}");
            if rc_want != 0 {
                assert_eq!(out["code"], 7, "a malformed GC is an invalid config: {out}");
            }
            assert_eq!(
                ovs_ports_of(&env, "cid-k-1").len(),
                1,
                "GC {name} unplugged pod-k"
            );
            assert!(
                pod_k.ip(&["link", "show", "eth0"]).is_ok(),
                "GC {name} took pod-k's eth0"
            );
        }
        // CNI GC: everything not listed as valid goes
        let mut gc = d.conf("1.1.0");
        gc["cni.dev/valid-attachments"] = serde_json::json!([]);
        let (rc, out) = cni(
            &CniCall {
                command: "GC",
                ..call_k
            },
            &gc,
        );
        assert_eq!(rc, 0, "{out}");
        assert!(ovs_ports_of(&env, "cid-k-1").is_empty());
        assert!(pod_k.ip(&["link", "show", "eth0"]).is_err());
        assert!(d.state_files().is_empty());
        Ok(())
    })
    .await
}

/// Waits until the daemon's gauge of ADDs waiting for their VIF reads `n`.
async fn wait_adds_waiting(d: &Daemon, n: u64) -> anyhow::Result<()> {
    kuryr_stack_tests::wait_until(
        &format!("{n} ADDs waiting in the daemon"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let m = common::http_get(&d.metrics, "/metrics")?;
            let v = m
                .lines()
                .find_map(|l| l.strip_prefix("kuryr_cni_adds_waiting "))
                .and_then(|v| v.trim().parse::<u64>().ok());
            Ok((v == Some(n)).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn a_del_cancels_the_add_of_its_container_waiting_for_a_vif() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let d = Daemon::start(&env, &[])?;
        let conf = d.conf("1.1.0");
        // a KuryrPort with no VIF yet: the ADD waits (the daemon's timeout is
        // far longer than this test)
        kuryrport(&client, &ns, "pod-w", "uid-w", &d.node, None).await?;
        let pod_ns = Netns::new("kdw")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let pending = {
            let (conf, netns, ns) = (conf.clone(), netns.clone(), ns.clone());
            std::thread::spawn(move || {
                cni(
                    &CniCall {
                        command: "ADD",
                        container_id: "cid-w-1",
                        netns: &netns,
                        ifname: "eth0",
                        pod: (&ns, "pod-w", "uid-w"),
                    },
                    &conf,
                )
            })
        };
        wait_adds_waiting(&d, 1).await?;
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                container_id: "cid-w-1",
                netns: &netns,
                ifname: "eth0",
                pod: (&ns, "pod-w", "uid-w"),
            },
            &conf,
        );
        assert_eq!(rc, 0, "DEL: {out}");
        // the ADD ended by the DEL, saying so (not a timeout, not "unreachable")
        let (rc, out) = pending.join().unwrap();
        assert_eq!(rc, 1, "{out}");
        assert_eq!(out["code"], 11, "{out}");
        assert_eq!(
            out["msg"], "ADD cancelled by a DEL of the same container",
            "{out}"
        );
        assert!(
            out["details"]
                .as_str()
                .unwrap_or_default()
                .contains("the pod's VIF"),
            "{out}"
        );
        wait_adds_waiting(&d, 0).await?;
        assert!(ovs_ports_of(&env, "cid-w-1").is_empty());
        assert!(d.state_files().is_empty(), "{:?}", d.state_files());
        Ok(())
    })
    .await
}

/// A KuryrPort on this node that holds a VIF kuryr-rs cannot read (an
/// upstream class it does not implement, and junk) is in the daemon's first
/// list: the daemon still becomes ready, binds the node's other pods, and
/// refuses that pod's ADD at once with its own CNI error. And a runtime
/// that passes no `K8S_POD_UID` gets the pod's UID resolved from the API:
/// a KuryrPort of an earlier pod of the same name is never bound.
#[tokio::test]
async fn an_unreadable_kuryrport_fails_only_its_pod_and_no_uid_is_resolved() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let node = kuryr_stack_tests::unique_name("kd-node-", 40);
        let dynamic: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource::erase::<kuryr_crds::KuryrPort>(&()),
        );
        for (name, vifs) in [
            (
                "pod-vhu",
                serde_json::json!({"eth0": {"default": true, "vif": {
                    "versioned_object.name": "VIFVHostUser",
                    "versioned_object.namespace": "os_vif",
                    "versioned_object.version": "1.1",
                    "versioned_object.data": {"id": "5f0c0000-0000-4000-8000-00000000a001",
                        "mode": "server", "path": "/var/run/openvswitch/vhu0"}}}}),
            ),
            ("pod-junk", serde_json::json!({"eth0": "junk"})),
        ] {
            let kp = serde_json::json!({
                "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
                "metadata": {"name": name, "labels": {kuryr_crds::NODE_NAME_LABEL: node}},
                "spec": {"podUid": format!("uid-{name}"), "podNodeName": node},
                "status": {"vifs": vifs}
            });
            dynamic
                .create(
                    &kube::api::PostParams::default(),
                    &serde_json::from_value(kp)?,
                )
                .await?;
        }
        // ready means its cache synced over the unreadable objects
        let d = Daemon::start_on(
            &env,
            &node,
            &[("KURYR_CNI_DAEMON__VIF_ANNOTATION_TIMEOUT", "3")],
        )?;
        let conf = d.conf("1.1.0");
        let pod_ns = Netns::new("kdu")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        for name in ["pod-vhu", "pod-junk"] {
            let uid = format!("uid-{name}");
            let call = CniCall {
                command: "ADD",
                container_id: "cid-u-1",
                netns: &netns,
                ifname: "eth0",
                pod: (&ns, name, &uid),
            };
            let (rc, out) = cni(&call, &conf);
            assert_eq!((rc, out["code"].as_u64()), (1, Some(105)), "{out}");
            assert!(
                out["msg"].as_str().unwrap_or("").contains("cannot be read"),
                "{out}"
            );
            assert!(ovs_ports_of(&env, "cid-u-1").is_empty());
        }
        // the node's other pods are bound
        let vif = fake_vif(40, "10.250.4.0/24", true);
        kuryrport(
            &client,
            &ns,
            "pod-fine",
            "uid-fine",
            &d.node,
            Some(vif.clone()),
        )
        .await?;
        let fine = CniCall {
            command: "ADD",
            container_id: "cid-u-2",
            netns: &netns,
            ifname: "eth0",
            pod: (&ns, "pod-fine", "uid-fine"),
        };
        let (rc, out) = cni(&fine, &conf);
        assert_eq!(rc, 0, "{out}");
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                ..fine
            },
            &conf,
        );
        assert_eq!(rc, 0, "{out}");

        // no K8S_POD_UID: a KuryrPort of the name is not enough
        let stale = fake_vif(41, "10.250.4.0/24", true);
        kuryrport(&client, &ns, "pod-named", "uid-stale", &d.node, Some(stale)).await?;
        let named = CniCall {
            container_id: "cid-u-3",
            pod: (&ns, "pod-named", ""),
            ..fine
        };
        let (rc, out) = cni(&named, &conf);
        assert_eq!(
            (rc, out["code"].as_u64()),
            (1, Some(4)),
            "no such pod: {out}"
        );
        assert!(ovs_ports_of(&env, "cid-u-3").is_empty());
        // the pod exists (on a node no kubelet serves), with another UID
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client.clone(), &ns);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pod-named"},
            "spec": {"nodeName": d.node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "localhost/kuryr-test/busybox:latest"}]}
        }))?;
        let pod = pods.create(&kube::api::PostParams::default(), &pod).await?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (rc, out) = cni(&named, &conf);
        assert_eq!(
            (rc, out["code"].as_u64()),
            (1, Some(11)),
            "the stale KuryrPort is not the pod's: {out}"
        );
        assert!(out["msg"].as_str().unwrap_or("").contains("VIF"), "{out}");
        assert!(ovs_ports_of(&env, "cid-u-3").is_empty());
        // the KuryrPort made for this pod is bound
        let kps: kube::Api<kuryr_crds::KuryrPort> = kube::Api::namespaced(client.clone(), &ns);
        kps.patch(
            "pod-named",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"podUid": uid}})),
        )
        .await?;
        set_vif(
            &client,
            &ns,
            "pod-named",
            &fake_vif(42, "10.250.4.0/24", true),
        )
        .await?;
        let (rc, out) = cni(&named, &conf);
        assert_eq!(rc, 0, "{out}");
        assert_eq!(ovs_ports_of(&env, "cid-u-3").len(), 1);
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                ..named
            },
            &conf,
        );
        assert_eq!(rc, 0, "{out}");
        assert!(ovs_ports_of(&env, "cid-u-3").is_empty());
        pods.delete(
            "pod-named",
            &kube::api::DeleteParams::default().grace_period(0),
        )
        .await?;
        Ok(())
    })
    .await
}
