//! Label and field selectors as the API server reads them from `labelSelector=` and
//! `fieldSelector=`.

use serde_json::Value;

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed `labelSelector`: every term must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelTerm>);

impl LabelSelector {
    /// Parses the equality-based and set-based forms (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
    /// `a in (x,y)`, `a notin (x,y)`).
    pub fn parse(text: &str) -> Result<Self, String> {
        split_top_level(text)
            .into_iter()
            .filter(|term| !term.trim().is_empty())
            .map(|term| parse_label_term(term.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|term| match term {
            LabelTerm::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelTerm::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelTerm::In(key, values) => label(key).is_some_and(|v| values.iter().any(|x| x == v)),
            LabelTerm::NotIn(key, values) => {
                label(key).is_none_or(|v| values.iter().all(|x| x != v))
            }
            LabelTerm::Exists(key) => label(key).is_some(),
            LabelTerm::Absent(key) => label(key).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `( … )` value set.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_label_term(term: &str) -> Result<LabelTerm, String> {
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("label selector term {term:?}: expected a (value, …) set"))?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelTerm::Absent(key.trim().to_owned()));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelTerm::NotEquals(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelTerm::Equals(key.trim().into(), value.trim().into()));
    }
    if let Some((key, rest)) = term.split_once(" notin ") {
        return Ok(LabelTerm::NotIn(key.trim().into(), set(rest)?));
    }
    if let Some((key, rest)) = term.split_once(" in ") {
        return Ok(LabelTerm::In(key.trim().into(), set(rest)?));
    }
    if term
        .chars()
        .all(|c| c.is_alphanumeric() || "-_./".contains(c))
    {
        return Ok(LabelTerm::Exists(term.to_owned()));
    }
    Err(format!("label selector term {term:?} is not understood"))
}

/// A parsed `fieldSelector`: `path=value` and `path!=value` over dotted paths such as
/// `metadata.name` or `status.phase`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Vec<String>, String, bool)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|term| !term.trim().is_empty())
            .map(|term| {
                let (path, value, equal) = if let Some((path, value)) = term.split_once("!=") {
                    (path, value, false)
                } else if let Some((path, value)) =
                    term.split_once("==").or_else(|| term.split_once('='))
                {
                    (path, value, true)
                } else {
                    return Err(format!("field selector term {term:?} needs = or !="));
                };
                let path = path.trim().split('.').map(str::to_owned).collect();
                Ok((path, value.trim().to_owned(), equal))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, value, equal)| {
            let found = path
                .iter()
                .try_fold(object, |at, key| at.get(key))
                .and_then(Value::as_str)
                .unwrap_or("");
            (found == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let pod = serde_json::json!({"metadata": {"labels": {"run": "a", "tier": "client"}}});
        let cases = [
            ("run=a", true),
            ("run==a,tier=client", true),
            ("run=b", false),
            ("run!=b", true),
            ("run", true),
            ("!run", false),
            ("!gpu", true),
            ("tier in (client, coordinator)", true),
            ("tier notin (client)", false),
            ("run=a,tier in (x,y)", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&pod), expected, "{text}");
        }
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Failed"}});
        assert!(
            FieldSelector::parse("metadata.name=p")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name=q")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("status.phase!=Running")
                .unwrap()
                .matches(&pod)
        );
        assert!(FieldSelector::parse("status.phase").is_err());
    }
}
