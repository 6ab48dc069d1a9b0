//! Neutron v2.0 calls. Deletes treat 404 as done; list calls follow
//! pagination links; `ensure_*` calls find by tag before they create, so a
//! retry after a crash never duplicates.

use crate::client::{Client, Service};
use crate::error::{Error, Result, gone_is_done};
use crate::query::Query;
use kuryr_openstack_types::neutron::*;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Kinds of Neutron objects that carry tags, by URL collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaggedResource {
    /// `networks`.
    Network,
    /// `subnets`.
    Subnet,
    /// `ports`.
    Port,
    /// `security-groups`.
    SecurityGroup,
    /// `trunks`.
    Trunk,
    /// `routers`.
    Router,
    /// `subnetpools`.
    SubnetPool,
}

impl TaggedResource {
    fn collection(self) -> &'static str {
        match self {
            TaggedResource::Network => "networks",
            TaggedResource::Subnet => "subnets",
            TaggedResource::Port => "ports",
            TaggedResource::SecurityGroup => "security-groups",
            TaggedResource::Trunk => "trunks",
            TaggedResource::Router => "routers",
            TaggedResource::SubnetPool => "subnetpools",
        }
    }
}

/// Neutron calls of a [`Client`].
#[derive(Debug, Clone)]
pub struct Neutron {
    c: Client,
}

/// The JSON key of one object of `collection` (`security-groups` → `security_group`).
fn singular(collection: &str) -> String {
    let s = match collection.strip_suffix("ies") {
        // rbac-policies: rbac_policy
        Some(stem) => format!("{stem}y"),
        None => collection
            .strip_suffix('s')
            .unwrap_or(collection)
            .to_owned(),
    };
    s.replace('-', "_")
}

/// The JSON key of a list of `collection`.
fn plural(collection: &str) -> String {
    collection.replace('-', "_")
}

/// The `next` link of a page, if any (Neutron and Octavia alike).
pub(crate) fn next_link(page: &Value, key: &str) -> Option<String> {
    page[format!("{key}_links")]
        .as_array()?
        .iter()
        .find(|l| l["rel"] == "next")
        .and_then(|l| l["href"].as_str())
        .map(str::to_owned)
}

impl Neutron {
    pub(crate) fn new(c: Client) -> Self {
        Self { c }
    }

    async fn create<T: DeserializeOwned, B: Serialize>(
        &self,
        collection: &str,
        body: &B,
    ) -> Result<T> {
        let key = singular(collection);
        let mut v: Value = self
            .c
            .json(
                Service::Network,
                Method::POST,
                &format!("v2.0/{collection}"),
                Some(&json!({ &key: body })),
                false,
            )
            .await?;
        take(&mut v, &key, collection)
    }

    async fn get<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<T> {
        self.get_as(collection, id, &singular(collection)).await
    }

    /// `GET collection/id`, the object under `key` (for collections whose
    /// singular is not the plural less its `s`).
    async fn get_as<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        key: &str,
    ) -> Result<T> {
        let mut v: Value = self
            .c
            .json::<_, Value>(
                Service::Network,
                Method::GET,
                &format!("v2.0/{collection}/{id}"),
                None,
                true,
            )
            .await?;
        take(&mut v, key, collection)
    }

    async fn update<T: DeserializeOwned, B: Serialize>(
        &self,
        collection: &str,
        id: &str,
        body: &B,
    ) -> Result<T> {
        let key = singular(collection);
        let mut v: Value = self
            .c
            .json(
                Service::Network,
                Method::PUT,
                &format!("v2.0/{collection}/{id}"),
                Some(&json!({ &key: body })),
                true,
            )
            .await?;
        take(&mut v, &key, collection)
    }

    /// DELETE; `Ok(false)` when it was already gone.
    async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        gone_is_done(
            self.c
                .call(
                    Service::Network,
                    Method::DELETE,
                    &format!("v2.0/{collection}/{id}"),
                    None,
                    true,
                )
                .await,
        )
    }

    /// Every object of `collection` matching `q`, following `next` links.
    async fn list<T: DeserializeOwned>(&self, collection: &str, q: &Query) -> Result<Vec<T>> {
        let key = plural(collection);
        let mut out = Vec::new();
        let mut path = q.apply(&format!("v2.0/{collection}"));
        loop {
            let mut page: Value = self
                .c
                .json::<_, Value>(Service::Network, Method::GET, &path, None, true)
                .await?;
            let next = next_link(&page, &key);
            let items: Vec<T> = take(&mut page, &key, collection)?;
            let empty = items.is_empty();
            out.extend(items);
            match next {
                Some(n) if !empty => path = n,
                _ => return Ok(out),
            }
        }
    }

    // -------------------------------------------------------- floating IPs

    /// Allocates a floating IP (associated with `body.port_id` when set).
    pub async fn create_floating_ip(&self, body: &FloatingIpCreate) -> Result<FloatingIp> {
        self.create("floatingips", body).await
    }
    /// Floating IPs matching `q` (e.g. `floating_ip_address`, `port_id`, `tags`).
    pub async fn list_floating_ips(&self, q: &Query) -> Result<Vec<FloatingIp>> {
        self.list("floatingips", q).await
    }
    /// Associates the floating IP with `port_id`, or disassociates it
    /// (`None`). Idempotent.
    pub async fn associate_floating_ip(
        &self,
        id: &str,
        port_id: Option<&str>,
    ) -> Result<FloatingIp> {
        self.update("floatingips", id, &json!({ "port_id": port_id }))
            .await
    }
    /// Releases a floating IP (idempotent).
    pub async fn delete_floating_ip(&self, id: &str) -> Result<bool> {
        self.delete("floatingips", id).await
    }

    // ------------------------------------------------------------ networks

    /// Creates a network.
    pub async fn create_network(&self, body: &NetworkCreate) -> Result<Network> {
        self.create("networks", body).await
    }
    /// One network.
    pub async fn get_network(&self, id: &str) -> Result<Network> {
        self.get("networks", id).await
    }
    /// Networks matching `q`.
    pub async fn list_networks(&self, q: &Query) -> Result<Vec<Network>> {
        self.list("networks", q).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_network(&self, id: &str, body: &NetworkUpdate) -> Result<Network> {
        self.update("networks", id, body).await
    }
    /// The network tagged with all of `tags`, or a new one made from `body`
    /// and tagged. Idempotent: a network created but left untagged by a
    /// crash is found again by `body.name` in its project (so give networks
    /// made this way a unique name).
    pub async fn ensure_network(&self, tags: &[String], body: &NetworkCreate) -> Result<Network> {
        let by_name = match &body.name {
            Some(n) => Some(
                Query::new()
                    .filter("name", n)
                    .filter("project_id", self.project_or(&body.project_id).await?),
            ),
            None => None,
        };
        self.ensure_tagged(TaggedResource::Network, tags, by_name, body)
            .await
    }
    /// Deletes a network (idempotent: `Ok(false)` if it was gone).
    pub async fn delete_network(&self, id: &str) -> Result<bool> {
        self.delete("networks", id).await
    }

    // ------------------------------------------------------------- subnets

    /// Creates a subnet.
    pub async fn create_subnet(&self, body: &SubnetCreate) -> Result<Subnet> {
        self.create("subnets", body).await
    }
    /// One subnet.
    pub async fn get_subnet(&self, id: &str) -> Result<Subnet> {
        self.get("subnets", id).await
    }
    /// Addresses network `id` and its subnets have and use (`GET
    /// network-ip-availabilities/{id}`, one small answer whatever the
    /// number of ports; admin only under Neutron's default policy).
    pub async fn network_ip_availability(&self, id: &str) -> Result<NetworkIpAvailability> {
        self.get_as("network-ip-availabilities", id, "network_ip_availability")
            .await
    }
    /// Subnets matching `q`.
    pub async fn list_subnets(&self, q: &Query) -> Result<Vec<Subnet>> {
        self.list("subnets", q).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_subnet(&self, id: &str, body: &SubnetUpdate) -> Result<Subnet> {
        self.update("subnets", id, body).await
    }
    /// The subnet tagged with all of `tags`, or a new one made from `body`
    /// and tagged. Idempotent like [`Neutron::ensure_network`]; an untagged
    /// one is found again by `body.name` on its network.
    pub async fn ensure_subnet(&self, tags: &[String], body: &SubnetCreate) -> Result<Subnet> {
        let by_name = body.name.as_ref().map(|n| {
            Query::new()
                .filter("name", n)
                .filter("network_id", &body.network_id)
        });
        self.ensure_tagged(TaggedResource::Subnet, tags, by_name, body)
            .await
    }
    /// Deletes a subnet (idempotent).
    pub async fn delete_subnet(&self, id: &str) -> Result<bool> {
        self.delete("subnets", id).await
    }

    /// Creates a subnet pool.
    pub async fn create_subnet_pool(&self, body: &SubnetPoolCreate) -> Result<SubnetPool> {
        self.create("subnetpools", body).await
    }
    /// One subnet pool.
    pub async fn get_subnet_pool(&self, id: &str) -> Result<SubnetPool> {
        self.get("subnetpools", id).await
    }
    /// Subnet pools matching `q`.
    pub async fn list_subnet_pools(&self, q: &Query) -> Result<Vec<SubnetPool>> {
        self.list("subnetpools", q).await
    }
    /// Deletes a subnet pool (idempotent).
    pub async fn delete_subnet_pool(&self, id: &str) -> Result<bool> {
        self.delete("subnetpools", id).await
    }

    // ------------------------------------------------------------- routers

    /// Creates a router.
    pub async fn create_router(&self, body: &RouterCreate) -> Result<Router> {
        self.create("routers", body).await
    }
    /// One router.
    pub async fn get_router(&self, id: &str) -> Result<Router> {
        self.get("routers", id).await
    }
    /// Changes the fields set in `body`, e.g. sets or clears the external
    /// gateway (idempotent).
    pub async fn update_router(&self, id: &str, body: &RouterUpdate) -> Result<Router> {
        self.update("routers", id, body).await
    }
    /// Routers matching `q`.
    pub async fn list_routers(&self, q: &Query) -> Result<Vec<Router>> {
        self.list("routers", q).await
    }
    /// Deletes a router (idempotent).
    pub async fn delete_router(&self, id: &str) -> Result<bool> {
        self.delete("routers", id).await
    }
    /// Attaches a subnet or port to a router.
    pub async fn add_router_interface(
        &self,
        router_id: &str,
        iface: &RouterInterface,
    ) -> Result<Value> {
        self.c
            .json(
                Service::Network,
                Method::PUT,
                &format!("v2.0/routers/{router_id}/add_router_interface"),
                Some(iface),
                false,
            )
            .await
    }
    /// Detaches a subnet or port (idempotent: a 404 counts as done).
    pub async fn remove_router_interface(
        &self,
        router_id: &str,
        iface: &RouterInterface,
    ) -> Result<bool> {
        gone_is_done(
            self.c
                .json::<Value, _>(
                    Service::Network,
                    Method::PUT,
                    &format!("v2.0/routers/{router_id}/remove_router_interface"),
                    Some(iface),
                    true,
                )
                .await,
        )
    }

    // --------------------------------------------------------------- ports

    /// Creates one port.
    pub async fn create_port(&self, body: &PortCreate) -> Result<Port> {
        self.create("ports", body).await
    }

    /// Creates many ports in one call (`{"ports": [...]}`): all or none.
    pub async fn create_ports(&self, bodies: &[PortCreate]) -> Result<Vec<Port>> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let mut v: Value = self
            .c
            .json(
                Service::Network,
                Method::POST,
                "v2.0/ports",
                Some(&json!({ "ports": bodies })),
                false,
            )
            .await?;
        take(&mut v, "ports", "ports")
    }

    /// One port.
    pub async fn get_port(&self, id: &str) -> Result<Port> {
        self.get("ports", id).await
    }
    /// Ports matching `q`.
    pub async fn list_ports(&self, q: &Query) -> Result<Vec<Port>> {
        self.list("ports", q).await
    }
    /// Updates the fields set in `body`.
    pub async fn update_port(&self, id: &str, body: &PortUpdate) -> Result<Port> {
        self.update("ports", id, body).await
    }
    /// Deletes a port (idempotent).
    pub async fn delete_port(&self, id: &str) -> Result<bool> {
        self.delete("ports", id).await
    }

    /// Creates a port that carries `tags`: sent in the create call (newer
    /// Neutron sets them there), and set right after where the server
    /// ignored them (Neutron Zed does). Not idempotent by itself: see
    /// [`Neutron::ensure_port`].
    pub async fn create_port_tagged(&self, body: &PortCreate, tags: &[String]) -> Result<Port> {
        let mut b = body.clone();
        b.tags = Some(merge_tags(b.tags.take(), tags));
        let mut p = self.create_port(&b).await?;
        self.fix_tags(&mut p, b.tags.as_deref().unwrap_or_default())
            .await?;
        Ok(p)
    }

    /// Bulk form of [`Neutron::create_port_tagged`]: one create call for all
    /// ports, then one tag call per port only where the server ignored them.
    pub async fn create_ports_tagged(
        &self,
        bodies: &[PortCreate],
        tags: &[String],
    ) -> Result<Vec<Port>> {
        let bodies: Vec<PortCreate> = bodies
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.tags = Some(merge_tags(b.tags.take(), tags));
                b
            })
            .collect();
        let mut ports = self.create_ports(&bodies).await?;
        for (p, b) in ports.iter_mut().zip(&bodies) {
            self.fix_tags(p, b.tags.as_deref().unwrap_or_default())
                .await?;
        }
        Ok(ports)
    }

    async fn fix_tags(&self, p: &mut Port, want: &[String]) -> Result<()> {
        if want.iter().all(|t| p.tags.contains(t)) {
            return Ok(());
        }
        let all = merge_tags(Some(std::mem::take(&mut p.tags)), want);
        p.tags = self.replace_tags(TaggedResource::Port, &p.id, &all).await?;
        Ok(())
    }

    /// The port tagged with all of `tags`, or a new one made from `body` and
    /// tagged. Idempotent: after any failure (even a crash between the
    /// create and the tagging) calling it again returns the same port — a
    /// port left untagged is found again by `body.name` on its network, so
    /// give ports made this way a unique name.
    pub async fn ensure_port(&self, tags: &[String], body: &PortCreate) -> Result<Port> {
        require_tags(tags, "port")?;
        if let Some(p) = self
            .list_ports(&Query::new().tags(tags))
            .await?
            .into_iter()
            .next()
        {
            return Ok(p);
        }
        if let Some(name) = &body.name {
            let q = Query::new()
                .filter("name", name)
                .filter("network_id", &body.network_id);
            if let Some(mut p) = self.list_ports(&q).await?.into_iter().next() {
                self.fix_tags(&mut p, &merge_tags(body.tags.clone(), tags))
                    .await?;
                return Ok(p);
            }
        }
        self.create_port_tagged(body, tags).await
    }

    /// The caller's project, or `given`.
    async fn project_or(&self, given: &Option<String>) -> Result<String> {
        match given {
            Some(p) => Ok(p.clone()),
            None => self.c.project_id().await,
        }
    }

    /// Find-by-tag-or-create: the object of `kind` carrying all `tags`; else
    /// one matching `by_name` that carries none of them (made by an earlier
    /// attempt that died before tagging it), tagged now; else a new one
    /// from `body`, tagged right after it is made.
    async fn ensure_tagged<T: Tagged, B: Serialize>(
        &self,
        kind: TaggedResource,
        tags: &[String],
        by_name: Option<Query>,
        body: &B,
    ) -> Result<T> {
        let collection = kind.collection();
        require_tags(tags, collection)?;
        if let Some(found) = self
            .list::<T>(collection, &Query::new().tags(tags))
            .await?
            .into_iter()
            .next()
        {
            return Ok(found);
        }
        let mut obj: T = match by_name {
            Some(q) => match self
                .list::<T>(collection, &q.not_tags_any(tags))
                .await?
                .into_iter()
                .next()
            {
                Some(o) => o,
                None => self.create(collection, body).await?,
            },
            None => self.create(collection, body).await?,
        };
        if !tags.iter().all(|t| obj.tags().contains(t)) {
            let all = merge_tags(Some(obj.tags().to_vec()), tags);
            let now = self.replace_tags(kind, obj.id(), &all).await?;
            obj.set_tags(now);
        }
        Ok(obj)
    }

    // ---------------------------------------------------------------- tags

    /// Adds one tag (idempotent).
    pub async fn add_tag(&self, kind: TaggedResource, id: &str, tag: &str) -> Result<()> {
        let path = format!(
            "v2.0/{}/{id}/tags/{}",
            kind.collection(),
            encode_segment(tag)
        );
        self.c
            .call(Service::Network, Method::PUT, &path, None, true)
            .await
            .map(|_| ())
    }

    /// Replaces all tags.
    pub async fn replace_tags(
        &self,
        kind: TaggedResource,
        id: &str,
        tags: &[String],
    ) -> Result<Vec<String>> {
        let path = format!("v2.0/{}/{id}/tags", kind.collection());
        let v: Value = self
            .c
            .json(
                Service::Network,
                Method::PUT,
                &path,
                Some(&json!({ "tags": tags })),
                true,
            )
            .await?;
        Ok(serde_json::from_value(v["tags"].clone()).unwrap_or_default())
    }

    /// Removes one tag (idempotent: a missing tag is fine).
    pub async fn remove_tag(&self, kind: TaggedResource, id: &str, tag: &str) -> Result<bool> {
        let path = format!(
            "v2.0/{}/{id}/tags/{}",
            kind.collection(),
            encode_segment(tag)
        );
        gone_is_done(
            self.c
                .call(Service::Network, Method::DELETE, &path, None, true)
                .await,
        )
    }

    // ------------------------------------------------------ security groups

    /// Creates a security group (Neutron adds its default egress rules).
    pub async fn create_security_group(&self, body: &SecurityGroupCreate) -> Result<SecurityGroup> {
        self.create("security-groups", body).await
    }
    /// One security group with its rules.
    pub async fn get_security_group(&self, id: &str) -> Result<SecurityGroup> {
        self.get("security-groups", id).await
    }
    /// Security groups matching `q`.
    pub async fn list_security_groups(&self, q: &Query) -> Result<Vec<SecurityGroup>> {
        self.list("security-groups", q).await
    }
    /// Shares security group `id` with project `project` (an RBAC policy
    /// `access_as_shared`), so that project's ports may use it.
    /// Idempotent: a share that exists is kept.
    pub async fn share_security_group(&self, id: &str, project: &str) -> Result<()> {
        let q = Query::new()
            .filter("object_type", "security_group")
            .filter("object_id", id)
            .filter("action", "access_as_shared")
            .filter("target_tenant", project);
        if !self.list_rbac_policies(&q).await?.is_empty() {
            return Ok(());
        }
        let body = RbacPolicyCreate {
            object_type: "security_group".into(),
            object_id: id.to_owned(),
            action: "access_as_shared".into(),
            target_tenant: project.to_owned(),
        };
        match self.create::<RbacPolicy, _>("rbac-policies", &body).await {
            Ok(_) => Ok(()),
            // made meanwhile (or by an answer that was lost)
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
    /// RBAC policies matching `q`.
    pub async fn list_rbac_policies(&self, q: &Query) -> Result<Vec<RbacPolicy>> {
        self.list("rbac-policies", q).await
    }
    /// Deletes an RBAC policy (idempotent).
    pub async fn delete_rbac_policy(&self, id: &str) -> Result<bool> {
        self.delete("rbac-policies", id).await
    }
    /// Deletes a security group (idempotent).
    pub async fn delete_security_group(&self, id: &str) -> Result<bool> {
        self.delete("security-groups", id).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_security_group(
        &self,
        id: &str,
        body: &SecurityGroupUpdate,
    ) -> Result<SecurityGroup> {
        self.update("security-groups", id, body).await
    }
    /// The security group tagged with all of `tags`, or a new one made from
    /// `body` and tagged. Idempotent like [`Neutron::ensure_network`]; an
    /// untagged one is found again by `body.name` in its project.
    pub async fn ensure_security_group(
        &self,
        tags: &[String],
        body: &SecurityGroupCreate,
    ) -> Result<SecurityGroup> {
        let by_name = Query::new()
            .filter("name", &body.name)
            .filter("project_id", self.project_or(&body.project_id).await?);
        self.ensure_tagged(TaggedResource::SecurityGroup, tags, Some(by_name), body)
            .await
    }
    /// Adds a rule. A rule that already exists (409 `SecurityGroupRuleExists`)
    /// is an error the caller may treat as done.
    pub async fn create_security_group_rule(
        &self,
        body: &SecurityGroupRuleCreate,
    ) -> Result<SecurityGroupRule> {
        self.create("security-group-rules", body).await
    }
    /// Adds a rule, or returns the identical rule that already exists
    /// (idempotent: Neutron's 409 `SecurityGroupRuleExists` names it).
    pub async fn ensure_security_group_rule(
        &self,
        body: &SecurityGroupRuleCreate,
    ) -> Result<SecurityGroupRule> {
        match self.create_security_group_rule(body).await {
            Err(e) if e.error_type() == Some("SecurityGroupRuleExists") => {
                let id = match &e {
                    Error::Api(a) => existing_rule_id(&a.message),
                    _ => None,
                };
                match id {
                    Some(id) => self.get_security_group_rule(&id).await,
                    None => Err(e),
                }
            }
            other => other,
        }
    }
    /// Adds many rules in one call (`{"security_group_rules": [...]}`):
    /// all or none.
    pub async fn create_security_group_rules(
        &self,
        bodies: &[SecurityGroupRuleCreate],
    ) -> Result<Vec<SecurityGroupRule>> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let mut v: Value = self
            .c
            .json(
                Service::Network,
                Method::POST,
                "v2.0/security-group-rules",
                Some(&json!({ "security_group_rules": bodies })),
                false,
            )
            .await?;
        take(&mut v, "security_group_rules", "security-group-rules")
    }
    /// One rule.
    pub async fn get_security_group_rule(&self, id: &str) -> Result<SecurityGroupRule> {
        self.get("security-group-rules", id).await
    }
    /// Rules matching `q`.
    pub async fn list_security_group_rules(&self, q: &Query) -> Result<Vec<SecurityGroupRule>> {
        self.list("security-group-rules", q).await
    }
    /// Deletes a rule (idempotent).
    pub async fn delete_security_group_rule(&self, id: &str) -> Result<bool> {
        self.delete("security-group-rules", id).await
    }

    // -------------------------------------------------------------- trunks

    /// Creates a trunk on a parent port.
    pub async fn create_trunk(&self, body: &TrunkCreate) -> Result<Trunk> {
        self.create("trunks", body).await
    }
    /// One trunk.
    pub async fn get_trunk(&self, id: &str) -> Result<Trunk> {
        self.get("trunks", id).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_trunk(&self, id: &str, body: &TrunkUpdate) -> Result<Trunk> {
        self.update("trunks", id, body).await
    }
    /// Trunks matching `q` (e.g. `port_id`).
    pub async fn list_trunks(&self, q: &Query) -> Result<Vec<Trunk>> {
        self.list("trunks", q).await
    }
    /// Deletes a trunk (idempotent). Neutron refuses (409 `TrunkInUse`)
    /// while the parent port is bound.
    pub async fn delete_trunk(&self, id: &str) -> Result<bool> {
        self.delete("trunks", id).await
    }
    /// Adds subports; answers the trunk.
    pub async fn add_subports(&self, trunk_id: &str, subports: &[SubPort]) -> Result<Trunk> {
        self.c
            .json(
                Service::Network,
                Method::PUT,
                &format!("v2.0/trunks/{trunk_id}/add_subports"),
                Some(&json!({ "sub_ports": subports })),
                false,
            )
            .await
    }
    /// Removes subports by port id; answers the trunk.
    pub async fn remove_subports(&self, trunk_id: &str, port_ids: &[String]) -> Result<Trunk> {
        let refs: Vec<SubPortRef> = port_ids
            .iter()
            .map(|p| SubPortRef { port_id: p.clone() })
            .collect();
        self.c
            .json(
                Service::Network,
                Method::PUT,
                &format!("v2.0/trunks/{trunk_id}/remove_subports"),
                Some(&json!({ "sub_ports": refs })),
                false,
            )
            .await
    }
    /// The trunk's subports.
    pub async fn get_subports(&self, trunk_id: &str) -> Result<Vec<SubPort>> {
        let mut v: Value = self
            .c
            .json::<_, Value>(
                Service::Network,
                Method::GET,
                &format!("v2.0/trunks/{trunk_id}/get_subports"),
                None,
                true,
            )
            .await?;
        take(&mut v, "sub_ports", "trunk subports")
    }

    /// Makes `want` subports of the trunk, adding only those it lacks.
    /// Idempotent: a retry after a partial failure adds the rest. A port
    /// already on the trunk under another VLAN id is an error (remove it
    /// first); a VLAN id another port holds is Neutron's 409. Answers the
    /// trunk's subports afterwards.
    pub async fn ensure_subports(&self, trunk_id: &str, want: &[SubPort]) -> Result<Vec<SubPort>> {
        let have = self.get_subports(trunk_id).await?;
        let add = subports_to_add(&have, want).map_err(|(port, had, wanted)| {
            Error::Refused(format!(
                "Port {port} is subport {had} of trunk {trunk_id}, not {wanted}: remove it first"
            ))
        })?;
        if add.is_empty() {
            return Ok(have);
        }
        Ok(self.add_subports(trunk_id, &add).await?.sub_ports)
    }

    /// Removes those of `port_ids` that are subports of the trunk.
    /// Idempotent: ports not (or no longer) on it are skipped, where
    /// `remove_subports` would fail the whole call with a 404. Answers the
    /// trunk's subports afterwards.
    pub async fn remove_subports_if_present(
        &self,
        trunk_id: &str,
        port_ids: &[String],
    ) -> Result<Vec<SubPort>> {
        let have = self.get_subports(trunk_id).await?;
        let present: Vec<String> = port_ids
            .iter()
            .filter(|id| have.iter().any(|s| &s.port_id == *id))
            .cloned()
            .collect();
        if present.is_empty() {
            return Ok(have);
        }
        Ok(self.remove_subports(trunk_id, &present).await?.sub_ports)
    }

    // ------------------------------------------------------- API discovery

    /// The API extensions Neutron has loaded.
    pub async fn extensions(&self) -> Result<Vec<Extension>> {
        self.list("extensions", &Query::new()).await
    }

    /// The agents Neutron knows (admin only).
    pub async fn agents(&self) -> Result<Vec<Agent>> {
        self.list("agents", &Query::new()).await
    }

    /// Whether extension `alias` is loaded.
    pub async fn has_extension(&self, alias: &str) -> Result<bool> {
        Ok(self.extensions().await?.iter().any(|e| e.alias == alias))
    }

    /// The API versions Neutron offers (`GET /`).
    pub async fn versions(&self) -> Result<Value> {
        self.c
            .json::<_, Value>(Service::Network, Method::GET, "", None, true)
            .await
    }

    /// A project's quota limits (`-1` = unlimited), keyed by resource.
    pub async fn quota(&self, project_id: &str) -> Result<std::collections::BTreeMap<String, i64>> {
        let mut v: Value = self
            .c
            .json::<_, Value>(
                Service::Network,
                Method::GET,
                &format!("v2.0/quotas/{project_id}"),
                None,
                true,
            )
            .await?;
        take(&mut v, "quota", "quota")
    }
}

/// Neutron objects that carry tags, for [`Neutron::ensure_tagged`].
trait Tagged: DeserializeOwned {
    fn id(&self) -> &str;
    fn tags(&self) -> &[String];
    fn set_tags(&mut self, tags: Vec<String>);
}

macro_rules! tagged {
    ($($t:ty),*) => {$(
        impl Tagged for $t {
            fn id(&self) -> &str {
                &self.id
            }
            fn tags(&self) -> &[String] {
                &self.tags
            }
            fn set_tags(&mut self, tags: Vec<String>) {
                self.tags = tags;
            }
        }
    )*};
}
tagged!(Network, Subnet, SecurityGroup);

/// The subports of `want` that `have` lacks; `Err((port, had, wanted))`
/// when a port is there under another segmentation.
fn subports_to_add(
    have: &[SubPort],
    want: &[SubPort],
) -> std::result::Result<Vec<SubPort>, (String, String, String)> {
    let mut add = Vec::new();
    for w in want {
        match have.iter().find(|h| h.port_id == w.port_id) {
            Some(h)
                if h.segmentation_id == w.segmentation_id
                    && h.segmentation_type == w.segmentation_type => {}
            Some(h) => {
                let show = |s: &SubPort| format!("{} {}", s.segmentation_type, s.segmentation_id);
                return Err((w.port_id.clone(), show(h), show(w)));
            }
            None if add.iter().any(|a: &SubPort| a.port_id == w.port_id) => {}
            None => add.push(w.clone()),
        }
    }
    Ok(add)
}

/// Find-by-tag calls need a tag: with none, any object would match.
fn require_tags(tags: &[String], what: &str) -> Result<()> {
    if tags.iter().any(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "Finding {what} by tag needs at least one non-empty tag"
        )))
    }
}

/// The id of the existing rule in Neutron's `SecurityGroupRuleExists`
/// message (`Security group rule already exists. Rule id is <uuid>.`).
fn existing_rule_id(message: &str) -> Option<String> {
    let rest = &message[message.find("Rule id is ")? + "Rule id is ".len()..];
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// `have` plus `more`, sorted, without duplicates.
fn merge_tags(have: Option<Vec<String>>, more: &[String]) -> Vec<String> {
    let mut all = have.unwrap_or_default();
    all.extend(more.iter().cloned());
    all.sort();
    all.dedup();
    all
}

/// Takes `v[key]` and decodes it, or names what was missing.
fn take<T: DeserializeOwned>(v: &mut Value, key: &str, what: &str) -> Result<T> {
    let inner = v
        .get_mut(key)
        .map(Value::take)
        .ok_or_else(|| Error::Decode {
            what: what.to_owned(),
            detail: format!("no `{key}` in the answer"),
        })?;
    serde_json::from_value(inner).map_err(|e| Error::Decode {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// A tag as one URL path segment.
fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_like_neutron() {
        assert_eq!(singular("security-groups"), "security_group");
        assert_eq!(singular("security-group-rules"), "security_group_rule");
        assert_eq!(singular("subnetpools"), "subnetpool");
        assert_eq!(singular("rbac-policies"), "rbac_policy");
        assert_eq!(plural("security-groups"), "security_groups");
        assert_eq!(encode_segment("kuryr cluster/a"), "kuryr%20cluster%2Fa");
    }

    #[test]
    fn finds_the_rule_neutron_says_exists() {
        assert_eq!(
            existing_rule_id(
                "Security group rule already exists. Rule id is 5b0f6f3c-9a4e-4a0e-bd2c-0e7a3c1d2f11."
            )
            .as_deref(),
            Some("5b0f6f3c-9a4e-4a0e-bd2c-0e7a3c1d2f11")
        );
        assert_eq!(
            existing_rule_id("Security group rule already exists."),
            None
        );
        assert_eq!(existing_rule_id("Rule id is ."), None);
    }

    #[test]
    fn adds_only_the_subports_a_trunk_lacks() {
        let have = vec![SubPort::vlan("a", 100), SubPort::vlan("b", 101)];
        let want = vec![
            SubPort::vlan("a", 100),
            SubPort::vlan("c", 102),
            SubPort::vlan("c", 102),
        ];
        assert_eq!(
            subports_to_add(&have, &want).unwrap(),
            vec![SubPort::vlan("c", 102)]
        );
        assert_eq!(subports_to_add(&have, &have).unwrap(), vec![]);
        let (port, had, wanted) = subports_to_add(&have, &[SubPort::vlan("b", 200)]).unwrap_err();
        assert_eq!(
            (port.as_str(), had.as_str(), wanted.as_str()),
            ("b", "vlan 101", "vlan 200")
        );
    }

    #[test]
    fn refuses_to_find_by_no_tag() {
        assert!(require_tags(&[], "port").is_err());
        assert!(require_tags(&[String::new()], "port").is_err());
        assert!(require_tags(&["kuryr".into()], "port").is_ok());
        assert_eq!(
            merge_tags(
                Some(vec!["b".into(), "a".into()]),
                &["a".into(), "c".into()]
            ),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn finds_pagination_links() {
        let page = json!({"ports": [], "ports_links": [
            {"rel": "previous", "href": "http://n/v2.0/ports?limit=2&marker=a&page_reverse=True"},
            {"rel": "next", "href": "http://n/v2.0/ports?limit=2&marker=b"}]});
        assert_eq!(
            next_link(&page, "ports").as_deref(),
            Some("http://n/v2.0/ports?limit=2&marker=b")
        );
        assert_eq!(next_link(&json!({"ports": []}), "ports"), None);
        let mut v = json!({"port": {"id": "p", "network_id": "n"}});
        let p: Port = take(&mut v, "port", "port").unwrap();
        assert_eq!(p.id, "p");
        let e = take::<Port>(&mut json!({}), "port", "GET port").unwrap_err();
        assert!(e.to_string().contains("no `port`"), "{e}");
    }
}
