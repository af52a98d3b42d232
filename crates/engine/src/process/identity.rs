//! The `user` and `group` workers switch to. Resolved once in `start()`,
//! before anything forks: a name that does not exist, or a switch the
//! process has no right to make, fails `start()` with a message naming the
//! option, instead of making every worker exit at birth and be respawned
//! forever.

use nix::unistd::{getegid, geteuid, setgid, setgroups, setuid, Gid, Group, Uid, User};

/// Who workers run as; empty when neither option is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user and its name, from `user`.
    user: Option<(Uid, String)>,
    /// The group and its name: from `group`, else the user's primary group.
    group: Option<(Gid, String)>,
}

impl Identity {
    /// Looks the names up. Only root can switch to another user or group,
    /// so for any other caller a target that differs from its own is an
    /// error too.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
        let user = user
            .map(|name| {
                User::from_name(name)
                    .map_err(|e| format!("option 'user' => '{name}': cannot look it up: {e}"))?
                    .ok_or_else(|| format!("option 'user' => '{name}': no such user"))
            })
            .transpose()?;
        let group = match group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(|e| format!("option 'group' => '{name}': cannot look it up: {e}"))?
                    .map(|g| (g.gid, g.name))
                    .ok_or_else(|| format!("option 'group' => '{name}': no such group"))?,
            ),
            None => user.as_ref().map(|u| (u.gid, u.name.clone())),
        };
        let identity = Identity {
            user: user.map(|u| (u.uid, u.name)),
            group,
        };
        if !geteuid().is_root() {
            identity.check_unprivileged(geteuid(), getegid())?;
        }
        Ok(identity)
    }

    /// For a caller that is not root: the identity must be its own.
    fn check_unprivileged(&self, uid: Uid, gid: Gid) -> Result<(), String> {
        if let Some((u, name)) = &self.user {
            if *u != uid {
                return Err(format!(
                    "option 'user' => '{name}': only a server started as root can switch its workers to another user (it runs as uid {uid})"
                ));
            }
        }
        if let Some((g, name)) = &self.group {
            if *g != gid {
                return Err(format!(
                    "option 'group' => '{name}': only a server started as root can switch its workers to another group (it runs as gid {gid})"
                ));
            }
        }
        Ok(())
    }

    /// In a freshly forked worker: group first, while it may still change.
    /// Nothing to do for a caller that is not root (`resolve` made sure the
    /// identity is already its own).
    pub fn assume(&self) -> Result<(), String> {
        if !geteuid().is_root() {
            return Ok(());
        }
        if let Some((gid, name)) = &self.group {
            setgroups(&[*gid]).map_err(|e| format!("setgroups({name}): {e}"))?;
            setgid(*gid).map_err(|e| format!("setgid({name}): {e}"))?;
        }
        if let Some((uid, name)) = &self.user {
            setuid(*uid).map_err(|e| format!("setuid({name}): {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_refused_naming_the_option() {
        let e = Identity::resolve(Some("no-such-user-taskq"), None).unwrap_err();
        assert_eq!(e, "option 'user' => 'no-such-user-taskq': no such user");
        let e = Identity::resolve(None, Some("no-such-group-taskq")).unwrap_err();
        assert_eq!(e, "option 'group' => 'no-such-group-taskq': no such group");
    }

    #[test]
    fn nothing_set_is_nothing_to_do() {
        assert_eq!(Identity::resolve(None, None).unwrap(), Identity::default());
    }

    #[test]
    fn without_root_only_the_own_identity_is_allowed() {
        let me = Identity {
            user: Some((Uid::from_raw(1000), "me".into())),
            group: Some((Gid::from_raw(1000), "me".into())),
        };
        assert!(me
            .check_unprivileged(Uid::from_raw(1000), Gid::from_raw(1000))
            .is_ok());
        let e = me
            .check_unprivileged(Uid::from_raw(1001), Gid::from_raw(1000))
            .unwrap_err();
        assert!(
            e.starts_with("option 'user' => 'me': only a server started as root"),
            "{e}"
        );
        let e = me
            .check_unprivileged(Uid::from_raw(1000), Gid::from_raw(5))
            .unwrap_err();
        assert!(
            e.starts_with("option 'group' => 'me': only a server started as root"),
            "{e}"
        );
    }

    #[test]
    fn a_user_alone_brings_its_primary_group() {
        match Identity::resolve(Some("root"), None) {
            Ok(root) => assert_eq!(root.group, Some((Gid::from_raw(0), "root".into()))),
            Err(e) => {
                assert!(!geteuid().is_root(), "{e}");
                assert!(e.contains("only a server started as root"), "{e}");
            }
        }
    }
}
