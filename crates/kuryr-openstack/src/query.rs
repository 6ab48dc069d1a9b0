//! Filters of Neutron and Octavia list calls.

/// Query string of a list call: filters, tags, fields, page size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// No filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// `key=value` (repeatable: Neutron ORs repeated keys).
    pub fn filter(mut self, key: &str, value: impl Into<String>) -> Self {
        self.pairs.push((key.to_owned(), value.into()));
        self
    }

    /// Objects carrying all of `tags`.
    pub fn tags<I: IntoIterator<Item = S>, S: AsRef<str>>(self, tags: I) -> Self {
        self.joined("tags", tags)
    }

    /// Objects carrying any of `tags`.
    pub fn tags_any<I: IntoIterator<Item = S>, S: AsRef<str>>(self, tags: I) -> Self {
        self.joined("tags-any", tags)
    }

    /// Objects carrying none of `tags`.
    pub fn not_tags_any<I: IntoIterator<Item = S>, S: AsRef<str>>(self, tags: I) -> Self {
        self.joined("not-tags-any", tags)
    }

    /// Objects not carrying all of `tags` (some may be there).
    pub fn not_tags<I: IntoIterator<Item = S>, S: AsRef<str>>(self, tags: I) -> Self {
        self.joined("not-tags", tags)
    }

    /// Only these fields in the answer (smaller, faster lists).
    pub fn fields<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, fields: I) -> Self {
        for f in fields {
            self.pairs.push(("fields".into(), f.as_ref().to_owned()));
        }
        self
    }

    /// Page size; the client follows `next` links to the end.
    pub fn limit(self, n: usize) -> Self {
        self.filter("limit", n.to_string())
    }

    fn joined<I: IntoIterator<Item = S>, S: AsRef<str>>(self, key: &str, tags: I) -> Self {
        let v: Vec<String> = tags.into_iter().map(|t| t.as_ref().to_owned()).collect();
        if v.is_empty() {
            self
        } else {
            self.filter(key, v.join(","))
        }
    }

    /// The encoded query string, without `?` (empty when there is no filter).
    pub fn encode(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs.iter())
            .finish()
    }

    /// `path` with this query appended.
    pub fn apply(&self, path: &str) -> String {
        let q = self.encode();
        if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_filters_tags_and_fields() {
        let q = Query::new()
            .filter("network_id", "n 1")
            .tags(["kuryr", "cluster=a"])
            .not_tags(Vec::<String>::new())
            .fields(["id", "status"])
            .limit(100);
        assert_eq!(
            q.encode(),
            "network_id=n+1&tags=kuryr%2Ccluster%3Da&fields=id&fields=status&limit=100"
        );
        assert_eq!(Query::new().apply("ports"), "ports");
        assert_eq!(
            Query::new().tags_any(["a"]).apply("ports"),
            "ports?tags-any=a"
        );
        assert_eq!(
            Query::new().not_tags_any(["a", "b"]).encode(),
            "not-tags-any=a%2Cb"
        );
    }
}
