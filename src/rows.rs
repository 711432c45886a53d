//! The types of a vendor's SIEM rows: for each vendor action, the OCSF class and activity and
//! the ECS category and type (`encodings/ocsf.rs`, `encodings/ecs.rs`), and the vendor's names in
//! OCSF, ECS and CEF. Each vendor's file (`sources/<vendor>.rs`) holds its own [`Table`], a
//! required item of its `Vendor`; the event carries its vendor's table from where it is made
//! (`Event::siem`), so the encoders find it without naming a vendor. A leaf: imports nothing.

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

/// A row with no target kind.
pub const fn rule(
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

/// `r`, limited to events whose target is of kind `target`.
pub const fn on(target: &'static str, r: Rule) -> Rule {
    Rule {
        target: Some(target),
        ..r
    }
}

/// `event.type` values the rows share.
pub const CREATE: &[&str] = &["creation"];
pub const CHANGE: &[&str] = &["change"];
pub const DELETE: &[&str] = &["deletion"];
pub const ACCESS: &[&str] = &["access"];
pub const INFO: &[&str] = &["info"];

/// The table of an event no vendor's file made (tests and tools; every vendor has its own,
/// a required item of its `Vendor`): everything is "Other".
pub static GENERIC: Table = NO_ROWS;

/// [`GENERIC`]'s values, to build a table from (`Table { kind: .., ..NO_ROWS }`).
pub const NO_ROWS: Table = Table {
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
    other: rule(
        "(any other)",
        Class::EntityManagement,
        99,
        "configuration",
        INFO,
    ),
};
