//! NetworkPolicies through faults, against the stack's real services: the
//! real kuryr-controller binary SIGKILLed while it turns a burst of
//! policies into groups, pods relabelled while no controller runs, and
//! Neutron stopped for 30 s while its successor starts. Afterwards every
//! KuryrNetworkPolicy holds the rules of the cluster as it is, its group
//! holds exactly those rules, every pod port carries exactly the groups of
//! the policies selecting it, and no group is left that no policy owns.
#![cfg(feature = "stack")]

mod common;

use common::policy::{POLICY_CONF, create_policy, group_keys, pod, policy_apis, spec_keys};
use common::{Harness, Stopped, kill_all, spawn};
use kube::api::{ListParams, Patch, PatchParams};
use kuryr_controller::plan;
use kuryr_openstack::Query;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// Policies in the burst (enough that the kill lands in its middle).
const POLICIES: usize = 30;
/// Pods selected by every policy, and their clients.
const SERVERS: usize = 3;
const CLIENTS: usize = 4;
/// Clients relabelled while no controller runs.
const LEAVING: usize = 2;

#[tokio::test]
async fn policies_converge_after_a_controller_kill_and_a_neutron_outage() -> anyhow::Result<()> {
    let h = Harness::new("npfault", "10.238.2.0/24").await?;
    let procs = Mutex::new(Vec::new());
    let body = async {
        let dir = std::env::temp_dir().join(unique_name("kuryr-npfault-", 40));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("kuryr.conf");
        std::fs::write(&conf, h.conf_text(POLICY_CONF))?;
        let log = dir.join("controller.log");
        println!("controller log: {}", log.display());
        procs.lock().unwrap().push(spawn(&h, &conf, &log, &[])?);

        let mut servers = Vec::new();
        for i in 0..SERVERS {
            servers.push(pod(&h, &format!("s-{i}"), "server").await?.0);
        }
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            clients.push(pod(&h, &format!("c-{i}"), "client").await?);
        }
        let defaults =
            h.os.neutron()
                .get_port(&clients[0].0)
                .await?
                .security_groups;

        // a burst of policies, the controller killed as soon as the first
        // has its group
        let (nps, knps) = policy_apis(&h);
        for i in 0..POLICIES {
            create_policy(
                &nps,
                &format!("p-{i:02}"),
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                    "ports": [{"port": 8000 + i}]}]}),
            )
            .await?;
        }
        let grouped = || async {
            Ok::<_, anyhow::Error>(
                knps.list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .filter(|k| {
                        k.status
                            .as_ref()
                            .is_some_and(|s| s.security_group_id.is_some())
                    })
                    .count(),
            )
        };
        wait_until(
            "a first policy with its group",
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async { Ok((grouped().await? > 0).then_some(())) },
        )
        .await?;
        kill_all(&procs);
        let done = grouped().await?;
        println!("controller killed with {done} of {POLICIES} policies grouped");
        assert!(done < POLICIES, "killed in the middle of the burst");

        // while no controller runs, some clients leave
        for i in 0..LEAVING {
            h.pods
                .patch(
                    &format!("c-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
                )
                .await?;
        }

        // the successor starts while Neutron is stopped
        {
            let _stopped = Stopped::new(&h.env.state, "neutron-server")?;
            procs.lock().unwrap().push(spawn(&h, &conf, &log, &[])?);
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        println!("neutron-server resumed");

        // every policy: rules of the remaining clients only, in its group
        let staying: BTreeSet<String> = clients[LEAVING..]
            .iter()
            .map(|(_, ip)| format!("{ip}/32"))
            .collect();
        let n = h.os.neutron();
        let groups = wait_until(
            "every policy's group holds exactly the remaining clients' rules",
            Duration::from_secs(300),
            Duration::from_millis(500),
            || async {
                let mut groups = BTreeMap::new();
                for k in knps.list(&ListParams::default()).await?.items {
                    let Some(st) = &k.status else { return Ok(None) };
                    let Some(g) = &st.security_group_id else {
                        return Ok(None);
                    };
                    let peers: BTreeSet<String> = k
                        .spec
                        .ingress_sg_rules
                        .iter()
                        .filter_map(|r| r.sg_rule.remote_ip_prefix.clone())
                        .collect();
                    if peers != staying || k.spec.ingress_sg_rules.len() != staying.len() {
                        return Ok(None);
                    }
                    let spec = spec_keys(&k);
                    let have = group_keys(&n, g).await?;
                    let unique: BTreeSet<_> = have.iter().cloned().collect();
                    if unique != spec || have.len() != spec.len() {
                        return Ok(None);
                    }
                    groups.insert(k.metadata.name.clone().unwrap_or_default(), g.clone());
                }
                Ok((groups.len() == POLICIES).then_some(groups))
            },
        )
        .await?;
        // the policies isolate ingress only: the open egress group too
        let open_egress = n
            .list_security_groups(&Query::new().tags([
                plan::cluster_tag(&h.cluster),
                "kuryr-group:open-egress".to_string(),
            ]))
            .await?
            .into_iter()
            .next()
            .map(|g| g.id)
            .unwrap_or_default();
        let mut all: Vec<String> = groups.values().cloned().collect();
        all.push(open_egress);
        all.sort();

        // servers carry all policy groups, clients their defaults
        let ports_right = || async {
            for s in &servers {
                let mut have = n.get_port(s).await?.security_groups;
                have.sort();
                if have != all {
                    return Ok::<_, anyhow::Error>(false);
                }
            }
            for (c, _) in &clients {
                let mut have = n.get_port(c).await?.security_groups;
                have.sort();
                let mut want = defaults.clone();
                want.sort();
                if have != want {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        wait_until(
            "every port has exactly its policies' groups",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async { Ok(ports_right().await?.then_some(())) },
        )
        .await?;

        // no group the cluster made that no policy owns
        let tagged = n
            .list_security_groups(&Query::new().tags([plan::cluster_tag(&h.cluster)]))
            .await?;
        let owned: BTreeSet<&String> = groups.values().collect();
        let stray: Vec<String> = tagged
            .iter()
            .filter(|g| g.name.starts_with("sg/") && !owned.contains(&g.id))
            .map(|g| format!("{} {}", g.id, g.name))
            .collect();
        assert!(stray.is_empty(), "groups no policy owns: {stray:?}");
        assert_eq!(
            tagged.iter().filter(|g| g.name.starts_with("sg/")).count(),
            POLICIES,
            "one group per policy"
        );

        // everything goes with the policies
        for i in 0..POLICIES {
            nps.delete(&format!("p-{i:02}"), &Default::default())
                .await?;
        }
        wait_until(
            "every policy group deleted",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async {
                let left = n
                    .list_security_groups(&Query::new().tags([plan::cluster_tag(&h.cluster)]))
                    .await?
                    .into_iter()
                    .filter(|g| g.name.starts_with("sg/"))
                    .count();
                Ok((left == 0).then_some(()))
            },
        )
        .await?;
        h.delete_all_pods(Duration::from_secs(120)).await?;
        kill_all(&procs);
        anyhow::Ok(())
    };
    finally(body, async {
        kill_all(&procs);
        h.cleanup().await
    })
    .await
}
