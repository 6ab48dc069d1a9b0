//! The INI dialect of oslo.config: `[section]`, `key = value` (or `:`),
//! comments starting with `#` or `;`, values continued on indented lines.

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
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // continuation of the previous value
                if let (Some(s), Some(k)) = (&section, &last)
                    && let Some((v, _)) = ini.sections.get_mut(s).and_then(|m| m.get_mut(k))
                {
                    if !v.is_empty() {
                        v.push('\n');
                    }
                    v.push_str(trimmed);
                    continue;
                }
                return Err(IniError {
                    line: n,
                    section: section.unwrap_or_default(),
                    reason: "indented line continues no option".into(),
                });
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| IniError {
                    line: n,
                    section: section.clone().unwrap_or_default(),
                    reason: format!("`{trimmed}`: a section header ends with `]`"),
                })?;
                let name = name.trim().to_owned();
                ini.sections.entry(name.clone()).or_default();
                section = Some(name);
                last = None;
                continue;
            }
            let Some(s) = &section else {
                return Err(IniError {
                    line: n,
                    section: String::new(),
                    reason: format!("`{trimmed}` is outside any [section]"),
                });
            };
            let pos = trimmed.find(['=', ':']).ok_or_else(|| IniError {
                line: n,
                section: s.clone(),
                reason: format!("`{trimmed}` is not `option = value`"),
            })?;
            let key = trimmed[..pos].trim().to_owned();
            let value = trimmed[pos + 1..].trim().to_owned();
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
                .insert(key.clone(), (value, n));
            last = Some(key);
        }
        // a value continued over lines is a list (oslo ListOpt): join its lines with commas
        for opts in ini.sections.values_mut() {
            for (v, _) in opts.values_mut() {
                if v.contains('\n') {
                    *v = v
                        .split('\n')
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(if v.contains(',') { "" } else { "," });
                }
            }
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
        assert_eq!(ini.get("b", "z").map(|(v, _)| v), Some("p,q"));
        assert_eq!(ini.get("b", "x"), Some(("4", 11)), "the last value wins");
        assert!(
            Ini::parse("[a\nx=1")
                .unwrap_err()
                .reason
                .contains("ends with `]`")
        );
        assert_eq!(Ini::parse("[a]\njunk\n").unwrap_err().line, 2);
        assert_eq!(Ini::parse("  indented\n").unwrap_err().line, 1);
    }
}
