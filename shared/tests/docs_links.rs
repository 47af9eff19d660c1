//! Every markdown link of README.md and docs/**/*.md resolves inside the repository: a relative
//! link names a file or directory that exists (and, with `#anchor`, a heading of that page), and
//! no link leaves the repository (`../shared` from the root, `../../x` from docs/, a `file:` URL).

use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The link targets of a markdown text (inline `[text](target)`, `![alt](target)` and
/// reference definitions `[label]: target`), outside fenced code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Reference definition.
        if let Some(rest) = t.strip_prefix('[') {
            if let Some((label, target)) = rest.split_once("]:") {
                if !label.contains(']') {
                    if let Some(target) = target.split_whitespace().next() {
                        out.push(target.trim_matches(['<', '>']).to_string());
                    }
                    continue;
                }
            }
        }
        // Drop code spans: what is between backticks is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            } else {
                plain.push(' ');
            }
        }
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            // Up to the matching ')', allowing one level of parentheses in the target.
            let mut depth = 0usize;
            let mut end = None;
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = Some(j);
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let Some(j) = end else { break };
            let inner = after[..j].trim();
            // `(target "title")`
            let target = inner.split_whitespace().next().unwrap_or("");
            out.push(target.trim_matches(['<', '>']).to_string());
            rest = &after[j..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut fenced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if !fenced && t.starts_with('#') {
            let base = anchor_of(t.trim_start_matches('#'));
            // GitHub numbers repeated headings: base, base-1, base-2...
            let n = seen.entry(base.clone()).or_insert(0usize);
            out.push(if *n == 0 { base } else { format!("{base}-{n}") });
            *n += 1;
        }
    }
    out
}

/// Lexically resolves `target` against `dir`; `None` when it climbs out of `root`.
fn resolve(root: &Path, dir: &Path, target: &str) -> Option<PathBuf> {
    let start = if target.starts_with('/') {
        root.to_path_buf()
    } else {
        dir.to_path_buf()
    };
    let rel = start.strip_prefix(root).ok()?.to_path_buf();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for c in Path::new(target.trim_start_matches('/')).components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// What is wrong with each link of `file` (empty when every link resolves).
fn broken_links(root: &Path, file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let dir = file.parent().unwrap_or(root);
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut bad = Vec::new();
    for target in link_targets(&text) {
        let lower = target.to_ascii_lowercase();
        if lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("mailto:")
        {
            continue;
        }
        if target.is_empty() || lower.starts_with("file:") {
            bad.push(format!("{name}: ({target}) points outside the repository"));
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            Some(file.to_path_buf())
        } else {
            resolve(root, dir, path)
        };
        let Some(resolved) = resolved else {
            bad.push(format!("{name}: ({target}) climbs out of the repository"));
            continue;
        };
        if !resolved.exists() {
            bad.push(format!(
                "{name}: ({target}) names {}, which does not exist",
                resolved.strip_prefix(root).unwrap_or(&resolved).display()
            ));
            continue;
        }
        if let Some(anchor) = anchor.filter(|_| resolved.extension().is_some_and(|x| x == "md")) {
            let page = fs::read_to_string(&resolved).unwrap_or_default();
            if !anchors(&page).iter().any(|a| a == anchor) {
                bad.push(format!("{name}: ({target}) has no heading #{anchor}"));
            }
        }
    }
    bad
}

fn project_docs() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    files.sort();
    files
}

#[test]
fn every_link_in_readme_and_docs_resolves_inside_the_repository() {
    let root = root();
    let files = project_docs();
    assert!(
        files.len() > 3 && files.iter().all(|f| f.is_file()),
        "README.md and docs/ not found from {}",
        root.display()
    );
    let links: usize = files
        .iter()
        .map(|f| link_targets(&fs::read_to_string(f).unwrap_or_default()).len())
        .sum();
    assert!(links > 20, "only {links} links found: the parser is broken");
    let bad: Vec<String> = files.iter().flat_map(|f| broken_links(&root, f)).collect();
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_finds_what_is_broken() {
    let dir = std::env::temp_dir().join(format!("nbaops-docs-links-{}", std::process::id()));
    let docs = dir.join("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(
        dir.join("README.md"),
        "# Top\n\n## A heading, with: punctuation\n",
    )
    .unwrap();
    fs::write(docs.join("ok.md"), "# Ok\n").unwrap();
    let page = docs.join("page.md");
    fs::write(
        &page,
        "# Page\n\
         [fine](ok.md) [fine too](../README.md#a-heading-with-punctuation) [self](#page)\n\
         [web](https://example.com/x) `[code](not-checked.md)`\n\
         ```\n[fenced](not-checked-either.md)\n```\n\
         [missing](missing.md)\n\
         [outside](../../elsewhere/README.md)\n\
         [shared](../../shared/x.md)\n\
         [anchor](ok.md#nowhere)\n\
         [ref]: gone.md\n",
    )
    .unwrap();
    let bad = broken_links(&dir, &page);
    let _ = fs::remove_dir_all(&dir);
    let found = |what: &str| bad.iter().any(|b| b.contains(what));
    assert!(found("(missing.md)"), "{bad:?}");
    assert!(found("(../../elsewhere/README.md) climbs out"), "{bad:?}");
    // The workspace's sibling `../shared` (from the root): outside, even if it exists.
    assert!(found("(../../shared/x.md) climbs out"), "{bad:?}");
    assert!(found("(ok.md#nowhere) has no heading"), "{bad:?}");
    assert!(found("(gone.md)"), "{bad:?}");
    assert_eq!(bad.len(), 5, "{bad:?}");
}
