//! Every kind of load error, with its exact line and column and a sentence a person recognises.
//!
//! Each policy is written as a list of lines, so that the line numbers asserted here can be
//! counted in the source: the first line is line 1, and columns count characters from 1.

use std::path::Path;

use palisade_policy::{load_str, LoadErrors};

/// Lines 1 to 7 of most policies below: two valid segments, `web` and `db`.
const HEAD: [&str; 7] = [
    "version: 1",
    "trust_domain: example.org",
    "segments:",
    "  web:",
    "    addresses: [10.0.1.0/24]",
    "  db:",
    "    addresses: [10.0.2.0/24]",
];

/// HEAD, then `more` from line 8 on.
fn with_head(more: &[&str]) -> String {
    HEAD.iter().chain(more).fold(String::new(), |mut s, l| {
        s.push_str(l);
        s.push('\n');
        s
    })
}

fn text(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn load_errors(text: &str) -> LoadErrors {
    match load_str(text, Path::new("test.yaml")) {
        Ok(_) => panic!("expected errors, the policy loaded:\n{text}"),
        Err(e) => e,
    }
}

/// The errors as (line, column, message).
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    load_errors(text)
        .errors
        .into_iter()
        .map(|e| (e.pos.line, e.pos.column, e.message))
        .collect()
}

/// Exactly one error, at `line`:`column`, whose message contains every one of `parts`.
#[track_caller]
fn assert_one(text: &str, line: usize, column: usize, parts: &[&str]) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "one error expected: {errors:#?}\n{text}");
    assert_error(&errors[0], line, column, parts);
}

#[track_caller]
fn assert_error(error: &(usize, usize, String), line: usize, column: usize, parts: &[&str]) {
    let (l, c, message) = error;
    assert_eq!((*l, *c), (line, column), "position of {message:?}");
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

#[test]
fn the_base_policy_loads() {
    load_str(&with_head(&[]), Path::new("test.yaml")).unwrap();
}

#[test]
fn errors_display_as_file_line_column_sentence() {
    let e = load_errors(&with_head(&["hosts:", "  a: { segments: [wbe] }"]));
    assert_eq!(
        e.to_string(),
        "test.yaml:9:19: host `a`: segments: unknown segment `wbe` (known: db, web, and `outside`)"
    );
}

// --- YAML syntax -------------------------------------------------------------------------------

#[test]
fn yaml_syntax_error_unclosed_list() {
    // The parser notices the missing `]` where the input ends: line 6, column 1.
    let t = text(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24",
    ]);
    assert_one(&t, 6, 1, &["YAML syntax", "expected ',' or ']'"]);
}

#[test]
fn yaml_syntax_error_bad_indentation() {
    let t = text(&["version: 1", " trust_domain: example.org"]);
    assert_one(
        &t,
        2,
        14,
        &["YAML syntax", "mapping values are not allowed"],
    );
}

#[test]
fn yaml_top_level_must_be_a_mapping() {
    assert_one(
        &text(&["- version: 1"]),
        1,
        1,
        &["the policy must be a YAML mapping"],
    );
}

// --- Unknown fields ----------------------------------------------------------------------------

#[test]
fn unknown_field_at_top_level() {
    let t = text(&[
        "version: 1",
        "trust_domain: example.org",
        "segmnts: {}",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
    ]);
    assert_one(
        &t,
        3,
        1,
        &[
            "unknown field `segmnts` in the policy",
            "expected `version`, `trust_domain`, `segments`, `rules`, `hosts`",
        ],
    );
}

#[test]
fn unknown_field_in_a_segment() {
    let t = text(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
        "    adresses: [10.0.2.0/24]",
    ]);
    assert_one(
        &t,
        6,
        5,
        &[
            "unknown field `adresses` in segment `web`",
            "`addresses`, `except`, `identities`, `egress_to_outside`",
        ],
    );
}

#[test]
fn unknown_field_in_a_rule() {
    let t = with_head(&[
        "rules:",
        "  - from: web",
        "    to: db",
        "    protocol: tcp",
        "    port: 5432",
    ]);
    assert_one(&t, 12, 5, &["unknown field `port` in rule 1", "`ports`"]);
}

#[test]
fn unknown_field_in_a_host() {
    let t = with_head(&["hosts:", "  node-a: { segments: [web], zone: eu }"]);
    assert_one(
        &t,
        9,
        30,
        &[
            "unknown field `zone` in host `node-a`",
            "(expected `segments`)",
        ],
    );
}

// --- Unknown segments --------------------------------------------------------------------------

#[test]
fn unknown_segment_in_from() {
    let t = with_head(&["rules:", "  - from: [web, wbe]", "    to: db"]);
    assert_one(
        &t,
        9,
        17,
        &[
            "rule `rule-1`: from: unknown segment `wbe`",
            "(known: db, web, and `outside`)",
        ],
    );
}

#[test]
fn unknown_segment_in_to() {
    let t = with_head(&[
        "rules:",
        "  - name: web-to-db",
        "    from: web",
        "    to: dbb",
    ]);
    assert_one(&t, 11, 9, &["rule `web-to-db`: to: unknown segment `dbb`"]);
}

#[test]
fn unknown_segment_in_hosts() {
    let t = with_head(&[
        "hosts:",
        "  node-a:",
        "    segments:",
        "      - web",
        "      - frontend",
    ]);
    assert_one(
        &t,
        12,
        9,
        &["host `node-a`: segments: unknown segment `frontend`"],
    );
}

#[test]
fn outside_cannot_live_on_a_host() {
    // Points at the item, not at the list.
    let t = with_head(&["hosts:", "  node-a: { segments: [web, outside] }"]);
    assert_one(&t, 9, 29, &["`outside` cannot live on a host"]);
}

#[test]
fn a_refused_segment_is_not_also_an_unknown_one() {
    let t = with_head(&[
        "  cache: [10.0.3.0/24]",
        "rules:",
        "  - from: web",
        "    to: cache",
    ]);
    assert_one(&t, 8, 10, &["segment `cache` must be a mapping"]);
}

// --- CIDRs -------------------------------------------------------------------------------------

fn segment_with_addresses(list: &str) -> String {
    text(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        &format!("    addresses: {list}"),
    ])
}

#[test]
fn cidr_that_is_not_an_address() {
    let t = segment_with_addresses("[10.0.1.0/24, 10.0.300.0/24]");
    assert_one(
        &t,
        5,
        30,
        &[
            "segment `web`: addresses:",
            "\"10.0.300.0/24\" is not an IPv4 or IPv6 address or network",
        ],
    );
}

#[test]
fn cidr_with_a_prefix_too_long() {
    assert_one(
        &segment_with_addresses("[10.0.1.0/33]"),
        5,
        17,
        &["\"10.0.1.0/33\": the prefix length must be a number from 0 to 32"],
    );
    assert_one(
        &segment_with_addresses("[\"fd00::/129\"]"),
        5,
        17,
        &["\"fd00::/129\": the prefix length must be a number from 0 to 128"],
    );
}

#[test]
fn cidr_with_host_bits_set_gives_the_network() {
    assert_one(
        &segment_with_addresses("[10.0.1.1/24]"),
        5,
        17,
        &["\"10.0.1.1/24\" has host bits set; the network is 10.0.1.0/24"],
    );
    assert_one(
        &segment_with_addresses("[\"fd00:1::1/64\"]"),
        5,
        17,
        &["\"fd00:1::1/64\" has host bits set; the network is fd00:1::/64"],
    );
}

#[test]
fn addresses_must_be_a_list() {
    assert_one(
        &segment_with_addresses("10.0.1.0/24"),
        5,
        16,
        &["segment `web`: addresses must be a list"],
    );
}

// --- Ports -------------------------------------------------------------------------------------

fn rule_with(protocol: &str, ports: &str) -> String {
    with_head(&[
        "rules:",
        "  - name: r",
        "    from: web",
        "    to: db",
        &format!("    protocol: {protocol}"),
        &format!("    ports: {ports}"),
    ])
}

#[test]
fn port_zero() {
    assert_one(
        &rule_with("tcp", "[443, 0]"),
        13,
        18,
        &["rule `r`: \"0\" is not a port (1 to 65535)"],
    );
}

#[test]
fn port_too_large() {
    assert_one(
        &rule_with("tcp", "[70000]"),
        13,
        13,
        &["rule `r`: \"70000\" is not a port (1 to 65535)"],
    );
}

#[test]
fn port_that_is_text() {
    assert_one(
        &rule_with("udp", "[domain]"),
        13,
        13,
        &["rule `r`: \"domain\" is not a port (1 to 65535)"],
    );
}

#[test]
fn port_range_with_a_bad_end_names_the_range() {
    assert_one(
        &rule_with("tcp", "[8000-80000]"),
        13,
        13,
        &["\"8000-80000\" is not a port range: \"80000\" is not a port"],
    );
}

#[test]
fn backwards_port_range() {
    assert_one(
        &rule_with("tcp", "[443, 9000-8000]"),
        13,
        18,
        &["rule `r`: the port range 9000-8000 is backwards (write 8000-9000)"],
    );
}

#[test]
fn ports_with_icmp() {
    assert_one(
        &rule_with("icmp", "[22]"),
        13,
        12,
        &["rule `r`: ports apply only to tcp, udp and sctp, not to icmp"],
    );
}

#[test]
fn ports_with_any_protocol() {
    // No `protocol:` means `any`.
    let t = with_head(&[
        "rules:",
        "  - name: r",
        "    from: web",
        "    to: db",
        "    ports: 22",
    ]);
    assert_one(
        &t,
        12,
        12,
        &["rule `r`: ports apply only to tcp, udp and sctp, not to any"],
    );
}

// --- Protocol, action --------------------------------------------------------------------------

#[test]
fn unknown_protocol() {
    let t = with_head(&[
        "rules:",
        "  - name: r",
        "    from: web",
        "    to: db",
        "    protocol: tpc",
    ]);
    assert_one(
        &t,
        12,
        15,
        &[
            "rule `r`: unknown protocol \"tpc\"",
            "(expected tcp, udp, sctp, icmp, icmpv6 or any)",
        ],
    );
}

#[test]
fn bad_action() {
    let t = with_head(&[
        "rules:",
        "  - name: r",
        "    from: web",
        "    to: db",
        "    action: reject",
    ]);
    assert_one(
        &t,
        12,
        13,
        &["rule `r`: action must be allow or deny, not \"reject\""],
    );
}

// --- Identities --------------------------------------------------------------------------------

fn segment_with_identities(list: &str) -> String {
    text(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
        &format!("    identities: {list}"),
    ])
}

#[test]
fn invalid_spiffe_id() {
    assert_one(
        &segment_with_identities("[\"spiffe://example.org/a\", \"https://example.org/a\"]"),
        6,
        44,
        &[
            "segment `web`:",
            "\"https://example.org/a\" is not a valid SPIFFE ID pattern",
            "spiffe://",
        ],
    );
    assert_one(
        &segment_with_identities("[\"spiffe://example.org/ns//x\"]"),
        6,
        18,
        &["\"spiffe://example.org/ns//x\" is not a valid SPIFFE ID pattern"],
    );
    assert_one(
        &segment_with_identities("[\"spiffe://example.org\"]"),
        6,
        18,
        &["names a trust domain, not a workload"],
    );
}

#[test]
fn identity_outside_the_trust_domain() {
    assert_one(
        &segment_with_identities("[spiffe://other.org/ns/shop/sa/web]"),
        6,
        18,
        &[
            "segment `web`: identity spiffe://other.org/ns/shop/sa/web is outside the trust domain example.org",
        ],
    );
}

// --- Duplicates --------------------------------------------------------------------------------

#[test]
fn duplicate_segment_name() {
    let t = with_head(&["  web:", "    addresses: [10.0.3.0/24]"]);
    assert_one(&t, 8, 3, &["`web` is defined twice (first at line 4)"]);
}

#[test]
fn duplicate_host_name() {
    let t = with_head(&[
        "hosts:",
        "  node-a: { segments: [web] }",
        "  node-b: { segments: [db] }",
        "  node-a: { segments: [db] }",
    ]);
    assert_one(&t, 11, 3, &["`node-a` is defined twice (first at line 9)"]);
}

#[test]
fn duplicate_rule_name() {
    let t = with_head(&[
        "rules:",
        "  - name: web-to-db",
        "    from: web",
        "    to: db",
        "  - name: web-to-db",
        "    from: db",
        "    to: web",
    ]);
    assert_one(
        &t,
        12,
        11,
        &["rule name `web-to-db` is used twice (first at line 9)"],
    );
}

#[test]
fn duplicate_field_in_a_rule() {
    let t = with_head(&["rules:", "  - from: web", "    from: db", "    to: db"]);
    assert_one(&t, 10, 5, &["`from` is defined twice (first at line 9)"]);
}

// --- Names -------------------------------------------------------------------------------------

#[test]
fn outside_as_a_segment_name() {
    let t = with_head(&["  outside:", "    addresses: [0.0.0.0/0]"]);
    assert_one(
        &t,
        8,
        3,
        &["`outside` is the built-in segment of addresses in no segment; choose another name"],
    );
}

#[test]
fn invalid_segment_name() {
    let t = with_head(&["  Cache:", "    addresses: [10.0.3.0/24]"]);
    assert_one(
        &t,
        8,
        3,
        &["segment name \"Cache\": use lowercase letters, digits"],
    );
}

#[test]
fn host_name_with_a_newline_is_refused() {
    // It would be written into the nft header comment, where a newline starts a command.
    let t = with_head(&["hosts:", "  \"a\\nflush ruleset\": { segments: [web] }"]);
    assert_one(
        &t,
        9,
        3,
        &["host name \"a\\nflush ruleset\": use letters, digits"],
    );
}

// --- Missing sections --------------------------------------------------------------------------

#[test]
fn missing_version() {
    let t = text(&[
        "# no version",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
    ]);
    // Reported where the policy mapping starts: its first key.
    assert_one(&t, 2, 1, &["`version: 1` is missing"]);
}

#[test]
fn wrong_or_empty_version() {
    let t = with_head(&[]).replace("version: 1", "version: 2");
    assert_one(&t, 1, 10, &["this release reads `version: 1` only"]);
    // An empty value is placed at its key, not at the next line.
    let t = with_head(&[]).replace("version: 1", "version:");
    assert_one(&t, 1, 1, &["this release reads `version: 1` only"]);
}

#[test]
fn missing_trust_domain() {
    let t = text(&[
        "version: 1",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
    ]);
    assert_one(&t, 1, 1, &["`trust_domain` is missing"]);
}

#[test]
fn missing_segments() {
    let t = text(&["version: 1", "trust_domain: example.org", "rules: []"]);
    assert_one(&t, 1, 1, &["`segments` is missing"]);
}

#[test]
fn an_empty_file_misses_all_three() {
    let e = errors("");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_error(&e[0], 1, 1, &["`version: 1` is missing"]);
    assert_error(&e[1], 1, 1, &["`trust_domain` is missing"]);
    assert_error(&e[2], 1, 1, &["`segments` is missing"]);
}

#[test]
fn segment_without_addresses_or_identities() {
    let t = with_head(&["  cache:", "    egress_to_outside: true"]);
    assert_one(
        &t,
        8,
        3,
        &["segment `cache` has neither addresses nor identities"],
    );
}

#[test]
fn rule_without_from() {
    let t = with_head(&["rules:", "  - name: r", "    to: db"]);
    // At the rule's first key, not at its first `:`.
    assert_one(&t, 9, 5, &["rule `r` has no `from`"]);
}

// --- except ------------------------------------------------------------------------------------

#[test]
fn except_not_inside_the_addresses() {
    let t = text(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  web:",
        "    addresses: [10.0.1.0/24]",
        "    except: [10.0.1.0/25, 10.0.2.0/25]",
    ]);
    assert_one(
        &t,
        6,
        27,
        &["segment `web`: except 10.0.2.0/25 is not inside any of its addresses"],
    );
}

// --- Several errors ----------------------------------------------------------------------------

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let t = text(&[
        "version: 1",                                       // 1
        "trust_domain: example.org",                        // 2
        "segments:",                                        // 3
        "  web:",                                           // 4
        "    addresses: [10.0.1.1/24]",                     // 5 host bits
        "    colour: blue",                                 // 6 unknown field
        "    identities: [spiffe://other.org/web]",         // 7 other trust domain
        "  db:",                                            // 8
        "    addresses: [10.0.2.0/24]",                     // 9
        "rules:",                                           // 10
        "  - name: web-to-db",                              // 11
        "    from: web",                                    // 12
        "    to: [db, cache]",                              // 13 unknown segment
        "    protocol: tcp",                                // 14
        "    ports: [5432, 0]",                             // 15 bad port
        "  - name: ping",                                   // 16
        "    from: db",                                     // 17
        "    to: web",                                      // 18
        "    protocol: icmp",                               // 19
        "    ports: [7]",                                   // 20 ports with icmp
        "    action: drop",                                 // 21 bad action
        "hosts:",                                           // 22
        "  node-a: { segments: [web, outside], role: db }", // 23 outside, unknown field
    ]);
    let e = errors(&t);
    let expected: [(usize, usize, &str); 9] = [
        (5, 17, "has host bits set"),
        (6, 5, "unknown field `colour`"),
        (7, 18, "outside the trust domain"),
        (13, 14, "unknown segment `cache`"),
        (15, 19, "\"0\" is not a port"),
        (20, 12, "ports apply only to tcp, udp and sctp"),
        (21, 13, "action must be allow or deny"),
        (23, 29, "`outside` cannot live on a host"),
        (23, 39, "unknown field `role`"),
    ];
    assert_eq!(e.len(), expected.len(), "{e:#?}");
    for (error, (line, column, part)) in e.iter().zip(expected) {
        assert_error(error, line, column, &[part]);
    }
    // And the whole report, one `file:line:column: sentence` per line.
    let report = load_errors(&t).to_string();
    assert_eq!(report.lines().count(), expected.len(), "{report}");
    assert!(
        report.lines().all(|l| l.starts_with("test.yaml:")),
        "{report}"
    );
}

// --- Nesting -----------------------------------------------------------------------------------

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // `- ` nests one level per two bytes; 100,000 levels used to overflow the stack in the YAML
    // parser and abort the process.
    let t = format!("version: 1\nrules:\n{}\n", "- ".repeat(100_000));
    assert_one(
        &t,
        3,
        127,
        &["the YAML nests deeper than 64 levels; a policy needs five"],
    );
    let t = format!(
        "version: 1\nrules: {}{}\n",
        "{a: ".repeat(100),
        "}".repeat(100)
    );
    assert_one(&t, 2, 260, &["nests deeper than 64 levels"]);
}
