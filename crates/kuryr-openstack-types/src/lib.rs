//! API shapes of Keystone v3, Neutron v2.0 and Octavia v2, as kuryr-rs uses
//! them: what the servers answer (tolerant: unknown fields are kept in
//! `extra` maps, missing optional ones default) and what clients send
//! (create and update bodies that leave out every unset field). No I/O: the
//! client (`kuryr-openstack`) and a server (kuryr-netd) share these types.

pub mod keystone;
pub mod neutron;
pub mod octavia;

/// Fields a server sent that these types do not name, kept as they came.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// `{"id": ...}` references, as Octavia lists listeners, pools and members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRef {
    /// The referenced object's id.
    pub id: String,
}

/// Deserializes `null` as the type's default: Neutron and Octavia send
/// `null` for some strings and lists that are normally present.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
