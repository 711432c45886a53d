//! The per-vendor tables the SIEM encodings share: for each vendor action, the OCSF class and
//! activity ([`super::ocsf`]) and the ECS category and type ([`super::ecs`]). One row a vendor
//! action; the tables of `docs/siem-formats.md` are [`readme_section`] of these tables (a test
//! holds them to them). An action no row names falls to its table's `other` row: OCSF activity 99
//! "Other" with the vendor's label as `activity_name`.

use crate::event::Event;

/// The OCSF 1.8.0 classes the tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    AccountChange,
    Authentication,
    EntityManagement,
    UserAccess,
    ApiActivity,
    DatastoreActivity,
}

impl Class {
    pub const fn uid(self) -> u32 {
        match self {
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::EntityManagement => 3004,
            Class::UserAccess => 3005,
            Class::ApiActivity => 6003,
            Class::DatastoreActivity => 6005,
        }
    }

    /// The class's caption (`class_name`).
    pub const fn name(self) -> &'static str {
        match self {
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::EntityManagement => "Entity Management",
            Class::UserAccess => "User Access Management",
            Class::ApiActivity => "API Activity",
            Class::DatastoreActivity => "Datastore Activity",
        }
    }

    /// The caption of its category (`category_name`); the category's uid is `uid / 1000`.
    pub const fn category_name(self) -> &'static str {
        match self.uid() / 1000 {
            3 => "Identity & Access Management",
            _ => "Application Activity",
        }
    }

    /// The caption of `activity_id` in this class (the schema's enum), `None` for an id the
    /// tables do not use. 99 is "Other": the event's `activity_name` then holds the vendor's label.
    pub const fn activity_caption(self, id: u8) -> Option<&'static str> {
        Some(match (self, id) {
            (_, 99) => "Other",
            (Class::AccountChange, 1) => "Create",
            (Class::AccountChange, 3) => "Password Change",
            (Class::AccountChange, 6) => "Delete",
            (Class::Authentication, 1) => "Logon",
            (Class::Authentication, 2) => "Logoff",
            (Class::EntityManagement, 1) => "Create",
            (Class::EntityManagement, 2) => "Read",
            (Class::EntityManagement, 3) => "Update",
            (Class::EntityManagement, 4) => "Delete",
            (Class::EntityManagement, 8) => "Enable",
            (Class::EntityManagement, 9) => "Disable",
            (Class::UserAccess, 1) => "Assign Privileges",
            (Class::UserAccess, 2) => "Revoke Privileges",
            (Class::ApiActivity, 1) => "Create",
            (Class::ApiActivity, 2) => "Read",
            (Class::ApiActivity, 3) => "Update",
            (Class::ApiActivity, 4) => "Delete",
            (Class::DatastoreActivity, 3) => "Connect",
            _ => return None,
        })
    }
}

/// One vendor action and what it is in each standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The vendor's action, exactly (the event's `action`).
    pub action: &'static str,
    /// The target kind the row is limited to, where one action means different things.
    pub target: Option<&'static str>,
    pub class: Class,
    /// The OCSF `activity_id` (99: Other).
    pub activity: u8,
    /// The ECS `event.category` (one allowed value).
    pub category: &'static str,
    /// The ECS `event.type` values (allowed for `category`).
    pub types: &'static [&'static str],
}

/// A vendor (one source kind): its names in both standards and its rows.
#[derive(Debug)]
pub struct Table {
    /// The source kind (`Event::kind`).
    pub kind: &'static str,
    /// OCSF `metadata.product.name`, and the ECS `event.provider`.
    pub product: &'static str,
    /// OCSF `metadata.product.vendor_name`.
    pub vendor_name: &'static str,
    /// OCSF `metadata.product.feature.name`.
    pub feature: &'static str,
    /// The namespace of the vendor's own fields: ECS top-level field, OCSF `unmapped` key,
    /// and the ECS `event.module`.
    pub namespace: &'static str,
    /// The ECS `event.dataset`.
    pub dataset: &'static str,
    /// The top-level key of the vendor's own action code, where the event's `action` is a
    /// text for people (Domo: `eventText` is the action, `actionType` the code the rows name).
    pub action_key: Option<&'static str>,
    /// The top-level key of the vendor's time (OCSF `metadata.original_time`).
    pub time_key: &'static str,
    /// CEF's Device Vendor and Device Product.
    pub cef_device: (&'static str, &'static str),
    /// Its User Access Management events carry Domino's `affecting`/`targets` detail (the users
    /// a privilege change affected and the role given), which OCSF's `user` and `privileges` take.
    pub access_detail: bool,
    pub rules: &'static [Rule],
    /// What an action no row names is.
    pub other: Rule,
}

impl Table {
    /// The row of `e`'s action (and target kind), or `other`.
    #[inline]
    pub fn rule(&self, e: &Event) -> &Rule {
        let (Some(action), target) = (self.action(e), e.target().and_then(|t| t.kind)) else {
            return &self.other;
        };
        self.rules
            .iter()
            .find(|r| r.action == action && (r.target.is_none() || r.target == target))
            .unwrap_or(&self.other)
    }

    /// The vendor's action code the rows name: the `action_key` field of its JSON (a plain
    /// string), else the event's `action`.
    #[inline]
    pub fn action<'e>(&self, e: &'e Event) -> Option<&'e str> {
        self.action_key
            .and_then(|k| top_level(e.raw(), k))
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
            .filter(|v| !v.is_empty() && !v.contains('\\'))
            .or(e.action())
    }

    /// The table of `kind`, or the generic one for a kind no table names.
    pub fn of(kind: &str) -> &'static Table {
        TABLES.iter().find(|t| t.kind == kind).unwrap_or(&GENERIC)
    }
}

const fn rule(
    action: &'static str,
    class: Class,
    activity: u8,
    category: &'static str,
    types: &'static [&'static str],
) -> Rule {
    Rule {
        action,
        target: None,
        class,
        activity,
        category,
        types,
    }
}

const fn on(target: &'static str, r: Rule) -> Rule {
    Rule {
        target: Some(target),
        ..r
    }
}

use Class::*;

const CREATE: &[&str] = &["creation"];
const CHANGE: &[&str] = &["change"];
const DELETE: &[&str] = &["deletion"];
const ACCESS: &[&str] = &["access"];
const INFO: &[&str] = &["info"];

/// Every vendor's table, in the order of `docs/siem-formats.md`.
pub static TABLES: [Table; 4] = [
    Table {
        kind: "domino_audit",
        product: "Domino",
        vendor_name: "Domino Data Lab",
        feature: "Audit Trail",
        namespace: "domino",
        dataset: "domino.audit",
        action_key: None,
        time_key: "timestamp",
        cef_device: ("Domino Data Lab", "Domino Audit Trail"),
        access_detail: true,
        rules: &[
            rule(
                "Create Project",
                EntityManagement,
                1,
                "configuration",
                CREATE,
            ),
            rule(
                "Archive Project",
                EntityManagement,
                9,
                "configuration",
                CHANGE,
            ),
            rule(
                "Add Collaborator",
                UserAccess,
                1,
                "iam",
                &["group", "change"],
            ),
            rule(
                "Remove Collaborator",
                UserAccess,
                2,
                "iam",
                &["group", "change"],
            ),
            rule(
                "Change Collaborator Role",
                UserAccess,
                1,
                "iam",
                &["user", "change"],
            ),
            rule("Create Dataset", EntityManagement, 1, "file", CREATE),
            rule("Delete Dataset", EntityManagement, 4, "file", DELETE),
            rule(
                "Create Dataset Snapshot",
                EntityManagement,
                1,
                "file",
                CREATE,
            ),
            rule("Upload Files", EntityManagement, 1, "file", CREATE),
            rule("Download Files", EntityManagement, 2, "file", ACCESS),
            rule("Delete Files", EntityManagement, 4, "file", DELETE),
            rule("Start Job", EntityManagement, 99, "process", &["start"]),
            rule("Stop Job", EntityManagement, 99, "process", &["end"]),
            rule(
                "Create Scheduled Job",
                EntityManagement,
                1,
                "configuration",
                CREATE,
            ),
            rule("Start App", EntityManagement, 99, "process", &["start"]),
            rule(
                "Start Workspace",
                EntityManagement,
                99,
                "process",
                &["start"],
            ),
            rule(
                "Change Feature Flag",
                EntityManagement,
                3,
                "configuration",
                CHANGE,
            ),
            rule(
                "Create Governance Bundle",
                EntityManagement,
                1,
                "configuration",
                CREATE,
            ),
            rule(
                "Approve Governance Bundle",
                EntityManagement,
                3,
                "configuration",
                CHANGE,
            ),
            rule(
                "Change Data Source Permissions",
                UserAccess,
                1,
                "iam",
                &["user", "change"],
            ),
            rule(
                "Create User",
                AccountChange,
                1,
                "iam",
                &["user", "creation"],
            ),
            rule(
                "Change User Role",
                UserAccess,
                1,
                "iam",
                &["user", "change"],
            ),
        ],
        other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
    },
    Table {
        kind: "domino_datasource",
        product: "Domino",
        vendor_name: "Domino Data Lab",
        feature: "Data Source Audit",
        namespace: "domino",
        dataset: "domino.data_source",
        action_key: None,
        time_key: "timestamp",
        cef_device: ("Domino Data Lab", "Domino Data Source Audit"),
        access_detail: false,
        rules: &[
            rule("AccessDataSource", DatastoreActivity, 3, "database", ACCESS),
            rule(
                "CreateDataSource",
                EntityManagement,
                1,
                "configuration",
                CREATE,
            ),
            rule(
                "DeleteDataSource",
                EntityManagement,
                4,
                "configuration",
                DELETE,
            ),
            rule(
                "EditDataSourcePermissions",
                EntityManagement,
                3,
                "iam",
                CHANGE,
            ),
            rule(
                "EditDataSourceOwnership",
                EntityManagement,
                3,
                "iam",
                CHANGE,
            ),
            rule(
                "AddDataSourceToProject",
                EntityManagement,
                99,
                "configuration",
                CHANGE,
            ),
            rule(
                "RemoveDataSourceFromProject",
                EntityManagement,
                99,
                "configuration",
                CHANGE,
            ),
        ],
        other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
    },
    Table {
        kind: "domo",
        product: "Domo",
        vendor_name: "Domo",
        feature: "Activity Log",
        namespace: "domo",
        dataset: "domo.activity",
        action_key: Some("actionType"),
        time_key: "time",
        cef_device: ("Domo", "Domo Activity Log"),
        access_detail: false,
        rules: &[
            rule("LOGGED_IN", Authentication, 1, "authentication", &["start"]),
            rule("LOGGED_OUT", Authentication, 2, "authentication", &["end"]),
            rule("VIEWED", ApiActivity, 2, "web", ACCESS),
            rule("CREATED", ApiActivity, 1, "configuration", CREATE),
            on(
                "USER",
                rule("UPDATED", ApiActivity, 3, "iam", &["user", "change"]),
            ),
            on(
                "GROUP",
                rule("UPDATED", ApiActivity, 3, "iam", &["group", "change"]),
            ),
            rule("UPDATED", ApiActivity, 3, "configuration", CHANGE),
            rule("DELETED", ApiActivity, 4, "configuration", DELETE),
            rule("EXPORTED", ApiActivity, 99, "web", ACCESS),
            rule("SHARED", ApiActivity, 99, "configuration", CHANGE),
            rule("RAN", ApiActivity, 99, "api", &["start"]),
        ],
        other: rule("(any other)", ApiActivity, 99, "api", INFO),
    },
    Table {
        kind: "wasabi_air",
        product: "Wasabi AiR",
        vendor_name: "Wasabi Technologies",
        feature: "Audit API",
        namespace: "wasabi_air",
        dataset: "wasabi_air.audit",
        action_key: None,
        time_key: "time",
        cef_device: ("Wasabi", "Wasabi AiR"),
        access_detail: false,
        rules: &[
            rule("login", Authentication, 1, "authentication", &["start"]),
            rule("logout", Authentication, 2, "authentication", &["end"]),
            rule(
                "update-password",
                EntityManagement,
                3,
                "iam",
                &["user", "change"],
            ),
            rule("enable", EntityManagement, 8, "configuration", CHANGE),
            rule("disable", EntityManagement, 9, "configuration", CHANGE),
            on(
                "user",
                rule("create", EntityManagement, 1, "iam", &["user", "creation"]),
            ),
            on(
                "user",
                rule("update", EntityManagement, 3, "iam", &["user", "change"]),
            ),
            on(
                "user",
                rule("delete", EntityManagement, 4, "iam", &["user", "deletion"]),
            ),
            on(
                "group",
                rule("create", EntityManagement, 1, "iam", &["group", "creation"]),
            ),
            on(
                "group",
                rule("update", EntityManagement, 3, "iam", &["group", "change"]),
            ),
            on(
                "group",
                rule("delete", EntityManagement, 4, "iam", &["group", "deletion"]),
            ),
            rule("add-user", EntityManagement, 3, "iam", &["group", "change"]),
            rule(
                "remove-user",
                EntityManagement,
                3,
                "iam",
                &["group", "change"],
            ),
            rule("create", EntityManagement, 1, "configuration", CREATE),
            rule("update", EntityManagement, 3, "configuration", CHANGE),
            rule("delete", EntityManagement, 4, "configuration", DELETE),
            rule("add-group", EntityManagement, 3, "configuration", CHANGE),
            rule("upload", EntityManagement, 1, "file", CREATE),
            rule("download", EntityManagement, 2, "file", ACCESS),
            rule("update-metadata", EntityManagement, 3, "file", CHANGE),
            rule("add-asset", EntityManagement, 3, "configuration", CHANGE),
            rule("revoke", EntityManagement, 9, "iam", CHANGE),
        ],
        other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
    },
];

/// For a kind no table names (a vendor added without one): everything is "Other".
static GENERIC: Table = Table {
    kind: "",
    product: "auditship",
    vendor_name: "auditship",
    feature: "Audit",
    namespace: "auditship",
    dataset: "auditship.audit",
    action_key: None,
    time_key: "time",
    cef_device: ("auditship", "auditship"),
    access_detail: false,
    rules: &[],
    other: rule("(any other)", EntityManagement, 99, "configuration", INFO),
};

/// The tables of `docs/siem-formats.md`: one per vendor, a row per action and the default last.
pub fn readme_section() -> String {
    let mut s = String::new();
    for t in &TABLES {
        s.push_str(&format!(
            "\n**{} {}** (`kind = \"{}\"`)\n\n| vendor action | OCSF class | OCSF activity | ECS event.category | ECS event.type |\n|---|---|---|---|---|\n",
            t.product, t.feature, t.kind
        ));
        for r in t.rules.iter().chain([&t.other]) {
            let action = match r.target {
                Some(k) => format!("`{}` on `{}`", r.action, k),
                None if std::ptr::eq(r, &t.other) => r.action.to_string(),
                None => format!("`{}`", r.action),
            };
            s.push_str(&format!(
                "| {action} | {} {} | {} {} | {} | {} |\n",
                r.class.uid(),
                r.class.name(),
                r.activity,
                r.class.activity_caption(r.activity).unwrap_or("?"),
                r.category,
                r.types.join(", ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_an_activity_of_its_class() {
        for t in TABLES.iter().chain([&GENERIC]) {
            for r in t.rules.iter().chain([&t.other]) {
                assert!(
                    r.class.activity_caption(r.activity).is_some(),
                    "{} {:?}",
                    t.kind,
                    r
                );
                assert!(!r.types.is_empty(), "{} {:?}", t.kind, r);
            }
            assert_eq!(t.other.activity, 99, "{}", t.kind);
        }
    }

    #[test]
    fn readme_holds_the_tables_of_the_code() {
        let readme = include_str!("../../docs/siem-formats.md");
        let want = readme_section();
        const BEGIN: &str = "<!-- siem-tables: generated from src/encodings/siem.rs -->\n";
        const END: &str = "<!-- /siem-tables -->";
        let got = readme
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(tables, _)| tables);
        assert_eq!(
            got,
            Some(want.as_str()),
            "docs/siem-formats.md's tables differ from the code's: put this between the \
             {BEGIN:?} and {END:?} lines:\n{want}"
        );
    }

    #[test]
    fn the_first_matching_row_wins_and_target_kinds_narrow_a_row() {
        let mut e = Event::standalone("w", "wasabi_air", "wasabi", 0, "{}");
        e.set(crate::event::Field::Action, Some("create"));
        e.set(crate::event::Field::TargetKind, Some("user"));
        let t = Table::of("wasabi_air");
        assert_eq!(t.rule(&e).types, &["user", "creation"]);
        e.set(crate::event::Field::TargetKind, Some("location"));
        assert_eq!(t.rule(&e).types, CREATE);
        e.set(crate::event::Field::Action, Some("teleport"));
        assert_eq!(t.rule(&e), &t.other);
        e.set(crate::event::Field::Action, None);
        assert_eq!(t.rule(&e), &t.other);
        assert!(std::ptr::eq(Table::of("nobody"), &GENERIC));
    }
}

/// Writes a JSON object a field at a time: keys are literals with nothing to escape, values
/// are escaped as the native writer escapes them. Absent values are left out, never `null`.
pub(crate) struct Json<'o> {
    pub out: &'o mut Vec<u8>,
    comma: bool,
}

impl<'o> Json<'o> {
    /// Opens the top-level object.
    #[inline]
    pub fn open(out: &'o mut Vec<u8>) -> Json<'o> {
        out.push(b'{');
        Json { out, comma: false }
    }

    /// Writes the fields of an object whose `{` is already written (the caller closes it).
    pub fn inside(out: &'o mut Vec<u8>) -> Json<'o> {
        Json { out, comma: false }
    }

    #[inline]
    pub fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = true;
    }

    #[inline]
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        crate::event::push_json_str(self.out, v);
    }

    #[inline]
    pub fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    #[inline]
    pub fn num(&mut self, k: &str, v: i64) {
        use std::io::Write;
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    /// Opens an object under `k`; [`Json::end`] closes it.
    #[inline]
    pub fn begin(&mut self, k: &str) {
        self.key(k);
        self.out.push(b'{');
        self.comma = false;
    }

    #[inline]
    pub fn end(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }

    /// An array of strings under `k`.
    pub fn strs<'v>(&mut self, k: &str, vs: impl IntoIterator<Item = &'v str>) {
        self.key(k);
        self.out.push(b'[');
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            crate::event::push_json_str(self.out, v);
        }
        self.out.push(b']');
    }

    /// `{"type":..,"id":..,"name":..}`-like object of an entity under `k`, with the given keys.
    pub fn entity(&mut self, k: &str, keys: [&str; 3], e: &crate::event::Entity<'_>) {
        self.begin(k);
        self.opt(keys[0], e.kind);
        self.opt(keys[1], e.id);
        self.opt(keys[2], e.name);
        self.end();
    }

    /// Closes the top-level object.
    #[inline]
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// The JSON text of the value of `key` in the top-level object `raw` (a string with its
/// quotes, or a number), found by one scan that skips strings and nested values: no tree is
/// built. `None` when the key is absent or its value is an object or array.
pub fn top_level<'r>(raw: &'r str, key: &str) -> Option<&'r str> {
    let b = raw.as_bytes();
    let mut i = b.iter().position(|&c| c == b'{')? + 1;
    let mut depth = 1usize;
    let mut want_key = true;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = string_end(b, i)?;
                if depth == 1 && want_key {
                    let mut j = skip_ws(b, end);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                    if &raw[i + 1..end - 1] == key {
                        let stop = match b.get(j)? {
                            b'"' => string_end(b, j)?,
                            b'{' | b'[' => return None,
                            _ => {
                                j + b[j..].iter().position(|c| {
                                    matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace()
                                })?
                            }
                        };
                        return Some(&raw[j..stop]);
                    }
                    want_key = false;
                    i = j;
                    continue;
                }
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => want_key = true,
            _ => {}
        }
        if depth == 0 {
            return None;
        }
        i += 1;
    }
    None
}

/// The position after the string that opens at `b[at]`.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut j = at + 1;
    loop {
        let p = crate::json::scan::find_string_stop(b, j)?;
        match b[p] {
            b'"' => return Some(p + 1),
            b'\\' => j = p + 2,
            _ => j = p + 1,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod top_level_tests {
    use super::top_level;

    #[test]
    fn finds_only_top_level_keys() {
        let raw =
            r#"{"a":{"time":"inner"},"s":"x\"time\":1","time":"2024-01-02T03:04:05Z","n":17}"#;
        assert_eq!(top_level(raw, "time"), Some(r#""2024-01-02T03:04:05Z""#));
        assert_eq!(top_level(raw, "n"), Some("17"));
        assert_eq!(top_level(raw, "a"), None);
        assert_eq!(top_level(raw, "missing"), None);
        assert_eq!(
            top_level(r#"{"x":[1,{"timestamp":2}],"timestamp" : 3 }"#, "timestamp"),
            Some("3")
        );
        assert_eq!(top_level("not json", "time"), None);
    }
}
