//! `bucket diff`: two snapshot indexes in, the keys added, removed and changed between them
//! out, in key order. Pure.

use std::collections::BTreeMap;

use super::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Added(&'a Version),
    Removed(&'a Version),
    /// A different version; `same_content` when size and ETag are equal (rewritten as it was).
    Changed {
        before: &'a Version,
        after: &'a Version,
        same_content: bool,
    },
}

impl Change<'_> {
    pub fn key(&self) -> &str {
        match self {
            Change::Added(v) | Change::Removed(v) => &v.key,
            Change::Changed { after, .. } => &after.key,
        }
    }
}

/// Present keys only: a delete marker means the key was absent at that point.
pub fn diff<'a>(before: &'a [Version], after: &'a [Version]) -> Vec<Change<'a>> {
    let present = |index: &'a [Version]| -> BTreeMap<&'a str, &'a Version> {
        index
            .iter()
            .filter(|v| !v.delete_marker)
            .map(|v| (v.key.as_str(), v))
            .collect()
    };
    let (a, b) = (present(before), present(after));
    let mut changes = Vec::new();
    for (key, old) in &a {
        match b.get(key) {
            None => changes.push(Change::Removed(old)),
            Some(new) if new.version_id != old.version_id => changes.push(Change::Changed {
                before: old,
                after: new,
                same_content: new.size == old.size && new.etag == old.etag,
            }),
            Some(_) => {}
        }
    }
    changes.extend(
        b.iter()
            .filter(|(k, _)| !a.contains_key(*k))
            .map(|(_, v)| Change::Added(v)),
    );
    changes.sort_by(|x, y| x.key().cmp(y.key()));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::version;

    #[test]
    fn added_removed_changed_and_deleted_keys() {
        let mut deleted = version("d", "d2", "", 4, true);
        deleted.delete_marker = true;
        let one = vec![
            version("a", "a1", "e", 1, true),
            version("c", "c1", "e", 1, true),
            version("d", "d1", "e", 1, true),
            version("s", "s1", "e", 1, true),
            version("r", "r1", "e", 1, true),
        ];
        let two = vec![
            version("a", "a1", "e", 1, true),
            version("b", "b1", "e", 2, true),
            version("c", "c2", "f", 2, true),
            deleted,
            version("s", "s2", "e", 3, true),
        ];
        let text: Vec<String> = diff(&one, &two)
            .iter()
            .map(|c| match c {
                Change::Added(v) => format!("+{}", v.key),
                Change::Removed(v) => format!("-{}", v.key),
                Change::Changed {
                    after,
                    same_content,
                    ..
                } => format!("~{}{}", after.key, if *same_content { "=" } else { "" }),
            })
            .collect();
        assert_eq!(text, vec!["+b", "~c", "-d", "-r", "~s="]);
    }
}
