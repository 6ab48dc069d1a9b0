//! Kubernetes label selectors (`matchLabels` + `matchExpressions`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{Pod, PolicyError};

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// A validated label selector.
///
/// All requirements must hold (logical AND); a selector without requirements
/// selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<(String, Op)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Validates `selector`.
    ///
    /// Errors on an unknown operator, `In`/`NotIn` without values,
    /// `Exists`/`DoesNotExist` with values, or an empty key.
    pub fn compile(selector: &LabelSelector) -> Result<Self, PolicyError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            check_key(key)?;
            requirements.push((key.clone(), Op::In(BTreeSet::from([value.clone()]))));
        }
        for expr in selector.match_expressions.iter().flatten() {
            check_key(&expr.key)?;
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(PolicyError::InvalidSelector(format!(
                        "operator {} on key {:?} needs at least one value",
                        expr.operator, expr.key
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(PolicyError::InvalidSelector(format!(
                        "operator {} on key {:?} takes no values",
                        expr.operator, expr.key
                    )));
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(PolicyError::InvalidSelector(format!(
                        "unknown operator {other:?} on key {:?}",
                        expr.key
                    )));
                }
            };
            requirements.push((expr.key.clone(), op));
        }
        Ok(Self { requirements })
    }

    /// Like [`Selector::compile`], with an absent selector selecting everything.
    pub fn compile_opt(selector: Option<&LabelSelector>) -> Result<Self, PolicyError> {
        selector.map_or_else(|| Ok(Self::default()), Self::compile)
    }

    /// Whether the selector has no requirement, i.e. selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The selector in Kubernetes' text syntax with its requirements sorted
    /// and duplicates dropped (`app=web,tier in (a,b),!legacy`), so two
    /// selectors choosing the same labels the same way read the same
    /// (`matchLabels: {a: b}` and `a In [b]` both give `a=b`). Empty for a
    /// selector choosing everything.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<String> = self
            .requirements
            .iter()
            .map(|(key, op)| {
                let list = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(",");
                match op {
                    Op::In(v) if v.len() == 1 => format!("{key}={}", list(v)),
                    Op::In(v) => format!("{key} in ({})", list(v)),
                    Op::NotIn(v) => format!("{key} notin ({})", list(v)),
                    Op::Exists => key.clone(),
                    Op::DoesNotExist => format!("!{key}"),
                }
            })
            .collect();
        parts.sort();
        parts.dedup();
        parts.join(",")
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

fn check_key(key: &str) -> Result<(), PolicyError> {
    if key.is_empty() {
        return Err(PolicyError::InvalidSelector("empty label key".into()));
    }
    Ok(())
}

/// The namespace of `policy`.
pub fn policy_namespace(policy: &NetworkPolicy) -> Result<&str, PolicyError> {
    policy
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .ok_or(PolicyError::MissingNamespace)
}

/// The compiled `spec.podSelector` of `policy` (absent = all pods).
pub fn pod_selector(policy: &NetworkPolicy) -> Result<Selector, PolicyError> {
    Selector::compile_opt(policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref()))
}

/// Whether `policy` applies to `pod`: same namespace and `spec.podSelector`
/// matches the pod's labels (an empty selector selects every pod of the
/// namespace).
pub fn selects(policy: &NetworkPolicy, pod: &Pod) -> Result<bool, PolicyError> {
    let namespace = policy_namespace(policy)?;
    let selector = pod_selector(policy)?;
    Ok(pod.namespace == namespace && selector.matches(&pod.labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::compile(&LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = sel(&[], vec![]);
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(Selector::compile_opt(None).unwrap().is_empty());
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel(&[("app", "web")], vec![expr("tier", "In", &["fe", "be"])]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "fe")])));
    }

    #[test]
    fn operators() {
        let not_in = sel(&[], vec![expr("env", "NotIn", &["prod"])]);
        assert!(not_in.matches(&labels(&[])), "NotIn matches a missing key");
        assert!(not_in.matches(&labels(&[("env", "dev")])));
        assert!(!not_in.matches(&labels(&[("env", "prod")])));
        let exists = sel(&[], vec![expr("env", "Exists", &[])]);
        assert!(exists.matches(&labels(&[("env", "")])));
        assert!(!exists.matches(&labels(&[("other", "x")])));
        let dne = sel(&[], vec![expr("env", "DoesNotExist", &[])]);
        assert!(dne.matches(&labels(&[("other", "x")])));
        assert!(!dne.matches(&labels(&[("env", "x")])));
    }

    #[test]
    fn invalid_selectors_are_errors() {
        let bad = [
            expr("k", "Equals", &["v"]),
            expr("k", "in", &["v"]),
            expr("k", "In", &[]),
            expr("k", "NotIn", &[]),
            expr("k", "Exists", &["v"]),
            expr("", "Exists", &[]),
        ];
        for e in bad {
            let s = LabelSelector {
                match_expressions: Some(vec![e.clone()]),
                ..Default::default()
            };
            assert!(
                matches!(Selector::compile(&s), Err(PolicyError::InvalidSelector(_))),
                "{e:?}"
            );
        }
    }

    #[test]
    fn selects_checks_namespace_and_labels() {
        let mut policy = NetworkPolicy::default();
        policy.metadata.namespace = Some("ns1".into());
        policy.spec = Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            ..Default::default()
        });
        let pod = |ns: &str, app: &str| Pod {
            namespace: ns.into(),
            name: "p".into(),
            labels: labels(&[("app", app)]),
            ..Default::default()
        };
        assert!(selects(&policy, &pod("ns1", "web")).unwrap());
        assert!(!selects(&policy, &pod("ns2", "web")).unwrap());
        assert!(!selects(&policy, &pod("ns1", "db")).unwrap());
        policy.spec.as_mut().unwrap().pod_selector = Some(LabelSelector::default());
        assert!(
            selects(&policy, &pod("ns1", "db")).unwrap(),
            "empty selector"
        );
        policy.spec.as_mut().unwrap().pod_selector = Some(LabelSelector {
            match_expressions: Some(vec![expr("app", "Matches", &["x"])]),
            ..Default::default()
        });
        assert!(selects(&policy, &pod("ns1", "web")).is_err());
        policy.metadata.namespace = None;
        assert_eq!(
            selects(&policy, &pod("ns1", "web")),
            Err(PolicyError::MissingNamespace)
        );
    }
}
