//! Neutron v2.0 calls. Deletes treat 404 as done; list calls follow
//! pagination links; `ensure_*` calls find by tag before they create, so a
//! retry after a crash never duplicates.

use crate::client::{Client, Service};
use crate::error::{Error, Result};
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
    let s = collection.strip_suffix('s').unwrap_or(collection);
    s.replace('-', "_")
}

/// The JSON key of a list of `collection`.
fn plural(collection: &str) -> String {
    collection.replace('-', "_")
}

/// The `next` link of a page, if any.
fn next_link(page: &Value, key: &str) -> Option<String> {
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
        let key = singular(collection);
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
        take(&mut v, &key, collection)
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
        match self
            .c
            .call(
                Service::Network,
                Method::DELETE,
                &format!("v2.0/{collection}/{id}"),
                None,
                true,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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
    /// Subnets matching `q`.
    pub async fn list_subnets(&self, q: &Query) -> Result<Vec<Subnet>> {
        self.list("subnets", q).await
    }
    /// Deletes a subnet (idempotent).
    pub async fn delete_subnet(&self, id: &str) -> Result<bool> {
        self.delete("subnets", id).await
    }

    /// Creates a subnet pool.
    pub async fn create_subnet_pool(&self, body: &SubnetPoolCreate) -> Result<SubnetPool> {
        self.create("subnetpools", body).await
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
        match self
            .c
            .json::<Value, _>(
                Service::Network,
                Method::PUT,
                &format!("v2.0/routers/{router_id}/remove_router_interface"),
                Some(iface),
                true,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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
        match self
            .c
            .call(Service::Network, Method::DELETE, &path, None, true)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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
    /// Deletes a security group (idempotent).
    pub async fn delete_security_group(&self, id: &str) -> Result<bool> {
        self.delete("security-groups", id).await
    }
    /// Adds a rule. A rule that already exists (409 `SecurityGroupRuleExists`)
    /// is an error the caller may treat as done.
    pub async fn create_security_group_rule(
        &self,
        body: &SecurityGroupRuleCreate,
    ) -> Result<SecurityGroupRule> {
        self.create("security-group-rules", body).await
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

    // ------------------------------------------------------- API discovery

    /// The API extensions Neutron has loaded.
    pub async fn extensions(&self) -> Result<Vec<Extension>> {
        self.list("extensions", &Query::new()).await
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
        assert_eq!(plural("security-groups"), "security_groups");
        assert_eq!(encode_segment("kuryr cluster/a"), "kuryr%20cluster%2Fa");
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
