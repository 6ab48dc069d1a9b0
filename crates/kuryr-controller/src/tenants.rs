//! Projects per namespace (kuryr-kubernetes' annotation project driver):
//! with namespace networks, a namespace's annotation
//! `openstack.org/kuryr-project` names the Keystone project of its network,
//! its pods' ports and its policies' groups.
//!
//! Neutron refuses a port whose groups belong to another project unless
//! they are shared with it, so a pod of such a project gets that project's
//! own `default` group (its members reach each other, nothing else reaches
//! them: two projects' pods are isolated from each other) plus the
//! cluster's node-access group, shared with the project by an RBAC policy
//! (`access_as_shared`) so the nodes' probes still reach the pod. Pods of
//! `[neutron_defaults] project` keep `[neutron_defaults]
//! pod_security_groups`.

use crate::{Context, Error, lock};
use k8s_openapi::api::core::v1::Namespace;
use kuryr_openstack::Query;

/// The namespace annotation naming the Keystone project of its network,
/// ports and groups.
pub const PROJECT_ANNOTATION: &str = "openstack.org/kuryr-project";

/// The project of namespace `ns`: its annotation, else `default`.
pub fn project_of(ns: &Namespace, default: &str) -> String {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROJECT_ANNOTATION))
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .unwrap_or(default)
        .to_owned()
}

/// The cluster's default project (`[neutron_defaults] project`, else the
/// one kuryr-controller's credentials are scoped to).
pub fn default_project(ctx: &Context) -> &str {
    ctx.settings.project_id.as_deref().unwrap_or_default()
}

/// The project the resources of namespace `ns` live in: its annotation's
/// with namespace networks, else the default.
pub fn namespace_project(ctx: &Context, ns: Option<&Namespace>) -> String {
    match (ns, &ctx.namespaces) {
        (Some(ns), Some(_)) => project_of(ns, default_project(ctx)),
        _ => default_project(ctx).to_owned(),
    }
}

/// The groups of a pod of `project` that no policy selects (sorted).
pub async fn pod_defaults(ctx: &Context, project: &str) -> Result<Vec<String>, Error> {
    if project.is_empty() || project == default_project(ctx) {
        return Ok(ctx.settings.security_groups.clone());
    }
    if let Some(g) = lock(&ctx.tenant_groups).get(project) {
        return Ok(g.clone());
    }
    let n = ctx.os.neutron();
    let q = Query::new()
        .filter("name", "default")
        .filter("project_id", project);
    let default = n
        .list_security_groups(&q)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Refused {
            reason: "NoDefaultSecurityGroup".into(),
            message: format!(
                "project {project} has no default security group yet (Neutron makes it with the project's first network)"
            ),
        })?;
    let mut groups = vec![default.id];
    if let Some(ng) = &ctx.node_groups {
        n.share_security_group(&ng.access, project).await?;
        groups.push(ng.access.clone());
    }
    // what the project's pods may get when policies select them
    if let Some(o) = &ctx.open_groups {
        n.share_security_group(&o.ingress, project).await?;
        n.share_security_group(&o.egress, project).await?;
    }
    groups.sort();
    lock(&ctx.tenant_groups).insert(project.to_owned(), groups.clone());
    tracing::info!(project = %project, groups = ?groups, "groups of the project's pods");
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_the_project_else_the_default() {
        let ns = |a: Option<&str>| -> Namespace {
            let mut n = Namespace::default();
            if let Some(p) = a {
                n.metadata.annotations =
                    Some([(PROJECT_ANNOTATION.to_string(), p.to_string())].into());
            }
            n
        };
        assert_eq!(project_of(&ns(None), "dflt"), "dflt");
        assert_eq!(project_of(&ns(Some("p-2")), "dflt"), "p-2");
        assert_eq!(project_of(&ns(Some("  ")), "dflt"), "dflt");
    }
}
