//! The admin credential: named bearer tokens from `GATEWAY_ADMIN_TOKENS` (`name:token,…`),
//! never a tenant token. The name is who the audit log records.

use aws_lc_rs::constant_time::verify_slices_are_equal;

/// Shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 24;

/// One configured admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// Who it is (recorded in the audit log).
    pub name: String,
    token: String,
}

/// Parses `name:token,name2:token2`; the message names the bad entry.
pub fn parse_tokens(raw: &[String]) -> Result<Vec<AdminToken>, String> {
    let mut out: Vec<AdminToken> = Vec::new();
    for entry in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (name, token) = entry
            .split_once(':')
            .ok_or_else(|| "each entry must be `name:token`".to_owned())?;
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(format!(
                "admin name `{name}` must be non-empty letters, digits, -_.@"
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token of `{name}` must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(format!("admin name `{name}` appears twice"));
        }
        out.push(AdminToken {
            name: name.to_owned(),
            token: token.to_owned(),
        });
    }
    Ok(out)
}

/// The admin whose token `presented` is, comparing in constant time.
pub fn identify<'a>(tokens: &'a [AdminToken], presented: &str) -> Option<&'a AdminToken> {
    let mut found = None;
    for t in tokens {
        if verify_slices_are_equal(t.token.as_bytes(), presented.as_bytes()).is_ok() {
            found = Some(t);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn named_tokens_parse_and_identify_their_admin() {
        let tokens = parse_tokens(&raw(
            "ops:aaaaaaaaaaaaaaaaaaaaaaaaaaaa, ci:bbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ))
        .unwrap();
        assert_eq!(
            identify(&tokens, "bbbbbbbbbbbbbbbbbbbbbbbbbbbb")
                .unwrap()
                .name,
            "ci"
        );
        assert!(identify(&tokens, "bbbbbbbbbbbbbbbbbbbbbbbbbbb").is_none());
        assert!(identify(&tokens, "").is_none());
    }

    #[test]
    fn malformed_entries_are_refused_by_name() {
        assert!(parse_tokens(&raw("ops")).is_err());
        assert!(parse_tokens(&raw("ops:short")).unwrap_err().contains("ops"));
        assert!(parse_tokens(&raw(":aaaaaaaaaaaaaaaaaaaaaaaaaaaa")).is_err());
        assert!(
            parse_tokens(&raw(
                "a:aaaaaaaaaaaaaaaaaaaaaaaaaaaa,a:bbbbbbbbbbbbbbbbbbbbbbbbbbbb"
            ))
            .is_err()
        );
        assert_eq!(parse_tokens(&[]).unwrap(), vec![]);
    }
}
