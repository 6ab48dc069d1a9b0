//! The peer-set groups (`[kubernetes] network_policy_peers = remote_group`,
//! see [`kuryr_policy::PeerSet`]): a group per set of pods some policy's
//! peer selects, named by the rules of every policy with that peer
//! (`remote_group_id`) and carried by the ports of the set's pods
//! ([`super::pod_groups`]). The groups hold no rule: carrying one admits
//! nothing, it only makes the port a member.
//!
//! They live in the cluster's project, tagged with the cluster's tags and
//! `kuryr-peers:<digest>` (found again after a crash between making one and
//! recording it in a KuryrNetworkPolicy's `peerGroups`). A group no
//! KuryrNetworkPolicy names any more is deleted by [`reconcile`].

use crate::{Context, Error};
use kube::api::{Api, ListParams};
use kuryr_crds::KuryrNetworkPolicy;
use kuryr_openstack::types::neutron::SecurityGroupCreate;
use kuryr_policy::{PeerIds, PeerSpec};
use std::collections::BTreeSet;

/// The tag naming a peer set's group: `kuryr-peers:<digest>`.
const TAG_PREFIX: &str = "kuryr-peers:";

/// The groups of `sets`, found by their tags or made, each left without
/// rules (a new group comes with Neutron's default egress rules, which
/// would open its members' egress).
pub async fn ensure(ctx: &Context, sets: &[PeerSpec]) -> Result<PeerIds, Error> {
    // one at a time: two policies with the same new peer reconciled at
    // once must not both make its group
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let n = ctx.os.neutron();
    let mut ids = PeerIds::new();
    for spec in sets {
        let set = spec.set().map_err(|e| Error::Refused {
            reason: "InvalidNetworkPolicy".into(),
            message: e.to_string(),
        })?;
        let mut tags = ctx.drivers.tags.clone();
        tags.push(format!("{TAG_PREFIX}{}", set.digest()));
        let g = n
            .ensure_security_group(
                &tags,
                &SecurityGroupCreate {
                    name: set.group_name(&ctx.cluster_id),
                    description: Some(set.description()),
                    project_id: Some(crate::tenants::default_project(ctx).to_owned()),
                    stateful: None,
                },
            )
            .await?;
        for r in &g.security_group_rules {
            match n.delete_security_group_rule(&r.id).await {
                Ok(_) => {
                    tracing::info!(group = %g.id, rule = %r.id, "rule of a peer-set group deleted")
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        ids.insert(set, g.id);
    }
    Ok(ids)
}

/// Deletes the peer-set groups of this cluster that no KuryrNetworkPolicy
/// names (their last policy went, or changed its peers). Groups are listed
/// before policies, so a group made meanwhile is not looked at. `prev` as
/// for [`super::network_policy::reconcile_groups`]: a periodic pass acts
/// only on groups found unnamed twice in a row (a policy may have made a
/// group and not yet recorded it). Answers how many were found.
pub async fn reconcile(ctx: &Context, prev: Option<&mut BTreeSet<String>>) -> Result<usize, Error> {
    let groups = ctx
        .os
        .neutron()
        .list_security_groups(&kuryr_openstack::Query::new().tags(ctx.drivers.tags.iter()))
        .await?;
    let knps: Api<KuryrNetworkPolicy> = Api::all(ctx.kube.clone());
    let named: BTreeSet<String> = knps
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|k| k.spec.peer_groups.iter().map(|g| g.id.clone()))
        .collect();
    let unnamed: BTreeSet<String> = groups
        .iter()
        .filter(|g| g.tags.iter().any(|t| t.starts_with(TAG_PREFIX)))
        .filter(|g| !named.contains(&g.id))
        .map(|g| g.id.clone())
        .collect();
    let act: Vec<String> = match prev {
        Some(prev) => {
            let both = unnamed.intersection(prev).cloned().collect();
            *prev = unnamed.clone();
            both
        }
        None => unnamed.iter().cloned().collect(),
    };
    for g in &act {
        if ctx.options.gc_dry_run {
            tracing::warn!(group = %g, "peer-set group no policy names (dry run: kept)");
        } else if !super::network_policy::delete_group(ctx, g).await? {
            tracing::info!(group = %g, "peer-set group no policy names still on ports; deleted once they drop it");
        }
    }
    Ok(unnamed.len())
}
