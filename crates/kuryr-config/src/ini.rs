//! The INI dialect of oslo.config (its `iniparser`): `[section]`, `key =
//! value` or `key: value` (whichever separator comes first), a value in
//! matching quotes unquoted, lines starting with `#` or `;` as comments,
//! and a value continued on indented lines, joined with newlines (a blank
//! or comment line ends it; an indented line is always a continuation, even
//! one starting with `#`). List options split the joined value on commas,
//! as oslo's `ListOpt` does, so `a,` + `b` is `[a, b]` and `a,b` + `c` is
//! `[a, "b\nc"]`.

use std::collections::BTreeMap;

/// Options of one section: value and line.
pub type Section = BTreeMap<String, (String, usize)>;

/// A parsed INI file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    sections: BTreeMap<String, Section>,
}

/// A line that is not INI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct IniError {
    /// Line number (1-based).
    pub line: usize,
    /// Section it was in.
    pub section: String,
    /// What is wrong.
    pub reason: String,
}

impl Ini {
    /// Parses `text`. A later value of the same option wins, as in oslo.config.
    pub fn parse(text: &str) -> Result<Self, IniError> {
        let mut ini = Ini::default();
        let mut section: Option<String> = None;
        let mut last: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end();
            if line.is_empty() {
                // a blank line ends a value continued over lines
                last = None;
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // continuation of the previous value
                if let (Some(s), Some(k)) = (&section, &last)
                    && let Some((v, _)) = ini.sections.get_mut(s).and_then(|m| m.get_mut(k))
                {
                    v.push('\n');
                    v.push_str(line.trim_start());
                    continue;
                }
                return Err(IniError {
                    line: n,
                    section: section.unwrap_or_default(),
                    reason:
                        "indented line continues no option (a blank or comment line ends a value)"
                            .into(),
                });
            }
            last = None;
            if line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| IniError {
                    line: n,
                    section: section.clone().unwrap_or_default(),
                    reason: format!("`{line}`: a section header ends with `]`"),
                })?;
                let name = name.trim().to_owned();
                if name.is_empty() {
                    return Err(IniError {
                        line: n,
                        section: String::new(),
                        reason: "empty section name".into(),
                    });
                }
                ini.sections.entry(name.clone()).or_default();
                section = Some(name);
                continue;
            }
            let Some(s) = &section else {
                return Err(IniError {
                    line: n,
                    section: String::new(),
                    reason: format!("`{line}` is outside any [section]"),
                });
            };
            let pos = line.find(['=', ':']).ok_or_else(|| IniError {
                line: n,
                section: s.clone(),
                reason: format!("`{line}` is not `option = value`"),
            })?;
            let key = line[..pos].trim().to_owned();
            let mut value = line[pos + 1..].trim();
            // a value in matching quotes is unquoted
            if value.len() >= 2
                && (value.starts_with('"') || value.starts_with('\''))
                && value.ends_with(&value[..1])
            {
                value = &value[1..value.len() - 1];
            }
            if key.is_empty() {
                return Err(IniError {
                    line: n,
                    section: s.clone(),
                    reason: "option name missing".into(),
                });
            }
            ini.sections
                .get_mut(s)
                .expect("section created")
                .insert(key.clone(), (value.to_owned(), n));
            last = Some(key);
        }
        Ok(ini)
    }

    /// Value and line of `section.option`.
    pub fn get(&self, section: &str, option: &str) -> Option<(&str, usize)> {
        self.sections
            .get(section)?
            .get(option)
            .map(|(v, l)| (v.as_str(), *l))
    }

    /// One section.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// All sections.
    pub fn sections(&self) -> impl Iterator<Item = (&String, &Section)> {
        self.sections.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oslo_style_ini() {
        let ini =
            Ini::parse("# c\n[a]\nx = 1\ny: two words \n; c\n[b]\nz=\n  p,\n  q\nx = 3\nx = 4\n")
                .unwrap();
        assert_eq!(ini.get("a", "x"), Some(("1", 3)));
        assert_eq!(ini.get("a", "y"), Some(("two words", 4)));
        // as oslo: the empty first line is part of the value
        assert_eq!(ini.get("b", "z").map(|(v, _)| v), Some("\np,\nq"));
        assert_eq!(ini.get("b", "x"), Some(("4", 11)), "the last value wins");
        assert!(
            Ini::parse("[a\nx=1")
                .unwrap_err()
                .reason
                .contains("ends with `]`")
        );
        assert_eq!(Ini::parse("[a]\njunk\n").unwrap_err().line, 2);
        assert_eq!(Ini::parse("  indented\n").unwrap_err().line, 1);
        assert!(
            Ini::parse("[]\n")
                .unwrap_err()
                .reason
                .contains("empty section")
        );
    }

    #[test]
    fn continuation_lines_join_with_newlines_as_oslo_does() {
        let ini = Ini::parse("[a]\nl = a,b\n  c\nq = \"quoted value\"\ns = 'x'\nu = \"half\nh = #not a comment\n  # nor this\n").unwrap();
        assert_eq!(
            ini.get("a", "l").map(|(v, _)| v),
            Some("a,b\nc"),
            "not a,bc"
        );
        assert_eq!(ini.get("a", "q").map(|(v, _)| v), Some("quoted value"));
        assert_eq!(ini.get("a", "s").map(|(v, _)| v), Some("x"));
        assert_eq!(ini.get("a", "u").map(|(v, _)| v), Some("\"half"));
        assert_eq!(
            ini.get("a", "h").map(|(v, _)| v),
            Some("#not a comment\n# nor this")
        );
        // a blank line or a comment line ends the value: what is indented
        // after it continues nothing
        let blank = Ini::parse("[a]\nl = a\n\n  b\n").unwrap_err();
        assert_eq!(blank.line, 4);
        let comment = Ini::parse("[a]\nl = a\n# c\n  b\n").unwrap_err();
        assert_eq!(comment.line, 4);
    }
}
