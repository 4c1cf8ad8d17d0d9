//! Tidy: the architecture rules of ARCHITECTURE.md, checked by reading the repository's files.
//!
//! The invariants there (only the store and the jobs hold SQL, the edges ask the runner, each
//! module sits on a layer and uses only its own and lower ones) stay true only if something
//! checks them as the code moves. Each rule is a pure function from files (a path relative to
//! the repository, with `/` separators, and the file's text) to violations, tried at the bottom
//! on small broken and clean examples. Each `#[test]` runs one rule over the real tree and
//! prints every violation as `path:line: message`.
//!
//! No parser: a small lexer tells code from comments and string literals, which is all the
//! rules need. Test code (a file named `tests.rs`, and a `#[cfg(test)]` module, which sits at
//! the end of its file) is not held to the SQL and layering rules.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::path::Path;

/// One broken rule, at the line that breaks it.
#[derive(Debug)]
struct Violation {
    path: String,
    line: usize,
    message: String,
}

impl Violation {
    fn new(path: &str, line: usize, message: impl Into<String>) -> Self {
        let (path, message) = (path.to_string(), message.into());
        Self {
            path,
            line,
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// Fails listing every violation, one per line.
fn assert_tidy(rule: &str, violations: &[Violation]) {
    let listing: String = violations
        .iter()
        .map(|found| format!("{found}\n"))
        .collect();
    let count = violations.len();
    assert!(count == 0, "{rule}: {count} violation(s)\n{listing}");
}

// --- Reading Rust source ---

/// A Rust file split into code and string literals.
struct Lexed {
    /// The text with comments and literals blanked to spaces: the same lines and byte offsets.
    code: String,
    /// Each string literal's contents (escapes as written), with the line it opens on.
    literals: Vec<(usize, String)>,
}

fn is_identifier_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

fn lex(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    let (mut code, mut literals) = (String::new(), Vec::new());
    let (mut index, mut line) = (0, 1);
    while index < chars.len() {
        let start = index;
        if at(index) == '/' && at(index + 1) == '/' {
            while !matches!(at(index), '\n' | '\0') {
                index += 1;
            }
        } else if at(index) == '/' && at(index + 1) == '*' {
            let mut depth = 0;
            while index < chars.len() {
                let (change, step) = match (at(index), at(index + 1)) {
                    ('/', '*') => (1, 2),
                    ('*', '/') => (-1, 2),
                    _ => (0, 1),
                };
                (depth, index) = (depth + change, index + step);
                if depth == 0 {
                    break;
                }
            }
        } else if let Some((quote, hashes)) = string_opening(&chars, index) {
            index = quote + 1;
            let closes = |index: usize| match hashes {
                Some(hashes) => at(index) == '"' && (1..=hashes).all(|k| at(index + k) == '#'),
                None => at(index) == '"',
            };
            while index < chars.len() && !closes(index) {
                index += 1 + usize::from(hashes.is_none() && at(index) == '\\');
            }
            let contents = chars[quote + 1..index.min(chars.len())].iter().collect();
            literals.push((line, contents));
            index += 1 + hashes.unwrap_or(0);
        } else if at(index) == '\'' && at(index + 1) == '\\' {
            index += 3;
            while !matches!(at(index), '\'' | '\0') {
                index += 1;
            }
            index += 1;
        } else if at(index) == '\'' && at(index + 2) == '\'' {
            index += 3;
        } else {
            // Code, a lifetime's quote included.
            code.push(at(index));
            line += usize::from(at(index) == '\n');
            index += 1;
            continue;
        }
        // A comment or a literal: blanked byte for byte, so offsets in `code` are the source's.
        for &character in &chars[start..index.min(chars.len())] {
            match character {
                '\n' => code.push('\n'),
                _ => code.extend(std::iter::repeat_n(' ', character.len_utf8())),
            }
            line += usize::from(character == '\n');
        }
    }
    Lexed { code, literals }
}

/// Whether a string literal opens at `index` (`"`, `b"`, `c"`, `r"`, `r#"`, `br#"`, ...): its
/// opening quote, and for a raw string the number of `#` that close it.
fn string_opening(chars: &[char], index: usize) -> Option<(usize, Option<usize>)> {
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    let mut quote = index + usize::from(matches!(at(index), 'b' | 'c'));
    let raw = at(quote) == 'r';
    quote += usize::from(raw);
    let hashes = (quote..chars.len())
        .take_while(|&hash| at(hash) == '#')
        .count();
    quote += hashes;
    let inside_identifier = quote > index && index > 0 && is_identifier_char(at(index - 1));
    if at(quote) != '"' || inside_identifier || (!raw && hashes > 0) {
        return None;
    }
    Some((quote, raw.then_some(hashes)))
}

/// The part of a file that is not test code: nothing of a `tests.rs`, and of other files the
/// text before a `#[cfg(test)]` line directly followed by a `mod` line.
fn non_test_code<'text>(path: &str, text: &'text str) -> &'text str {
    if path.rsplit('/').next() == Some("tests.rs") {
        return "";
    }
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let next = lines.peek().map_or("", |next| next.trim_start());
        let next_is_mod = ["mod ", "pub mod ", "pub(crate) mod "]
            .iter()
            .any(|m| next.starts_with(m));
        if line.trim_end() == "#[cfg(test)]" && next_is_mod {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// Where `word` occurs in `text` as a whole word (not inside a longer identifier).
fn word_positions<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let continues = |character: Option<char>| character.is_some_and(is_identifier_char);
    let matches = text.match_indices(word).map(|(at, _)| at);
    matches.filter(move |&at| {
        let starts_inside = continues(text[..at].chars().next_back());
        let ends_inside =
            word.ends_with(is_identifier_char) && continues(text[at + word.len()..].chars().next());
        !starts_inside && !ends_inside
    })
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Whether `path` is one of `places`: a place ending in `/` is a directory, any depth.
fn is_under(path: &str, places: &[&str]) -> bool {
    let is_in = |place: &&str| path == *place || (place.ends_with('/') && path.starts_with(place));
    places.iter().any(is_in)
}

// --- Rules 1 and 2: SQL stays in the store and the jobs ---

/// Openings of SQL statements, in SQL's upper case (so English prose does not match): words
/// follow one another with only whitespace between, except across `...`, which stands for any
/// text in the same literal.
const SQL_STATEMENTS: &[&str] = &[
    "SELECT ... FROM",
    "INSERT ... INTO",
    "UPDATE ... SET",
    "DELETE FROM",
    "CREATE ... TABLE",
    "CREATE ... INDEX",
    "CREATE ... TRIGGER",
    "CREATE ... VIEW",
    "DROP TABLE",
    "DROP INDEX",
    "DROP TRIGGER",
    "DROP VIEW",
    "PRAGMA",
    "BEGIN IMMEDIATE",
    "ALTER TABLE",
    "WITH ... AS (",
];

/// The first SQL statement in a literal's text: its offset, and which statement it opens.
fn find_sql(text: &str) -> Option<(usize, &'static str)> {
    fn rest_follows(text: &str, words: &[&str]) -> bool {
        match words {
            [] => true,
            ["...", word, rest @ ..] => {
                word_positions(text, word).any(|at| rest_follows(&text[at + word.len()..], rest))
            }
            [word, rest @ ..] => {
                let text = text.trim_start();
                word_positions(text, word).next() == Some(0)
                    && rest_follows(&text[word.len()..], rest)
            }
        }
    }
    let found = SQL_STATEMENTS.iter().filter_map(|statement| {
        let words: Vec<&str> = statement.split(' ').collect();
        let mut starts = word_positions(text, words[0]);
        let start = starts.find(|&at| rest_follows(&text[at + words[0].len()..], &words[1..]));
        start.map(|at| (at, *statement))
    });
    found.min_by_key(|(at, _)| *at)
}

/// Every string literal of the file's non-test code that holds SQL text.
fn sql_texts(path: &str, text: &str) -> Vec<Violation> {
    let lexed = lex(non_test_code(path, text));
    let found = lexed.literals.iter().filter_map(|(line, contents)| {
        let (at, statement) = find_sql(contents)?;
        let message = format!("SQL text (`{statement}`) in a string literal");
        let line = line + line_at(contents, at) - 1;
        Some(Violation::new(path, line, message))
    });
    found.collect()
}

/// The edges: they parse, ask the runner or the store, and answer.
const EDGES: &[&str] = &["src/http/", "src/cli/", "src/serve.rs", "src/main.rs"];

/// Rule 1: an edge's code neither names rusqlite nor holds SQL text.
fn check_edge_holds_no_sql(path: &str, text: &str) -> Vec<Violation> {
    if !is_under(path, EDGES) {
        return Vec::new();
    }
    let code = lex(non_test_code(path, text)).code;
    let message = "an edge names rusqlite: ask the store";
    let rusqlite = word_positions(&code, "rusqlite").map(|at| line_at(&code, at));
    let rusqlite = rusqlite.map(|line| Violation::new(path, line, message));
    let mut violations: Vec<Violation> = rusqlite.chain(sql_texts(path, text)).collect();
    violations.sort_by_key(|found| found.line);
    violations
}

/// Where SQL text may be: the store, the jobs that own their tables, and the demo's seeding.
const SQL_PLACES: &[&str] = &["src/store/", "src/jobs/", "src/demo/"];

/// Rule 2: SQL text only in `SQL_PLACES`.
fn check_sql_in_its_place(path: &str, text: &str) -> Vec<Violation> {
    if is_under(path, SQL_PLACES) {
        Vec::new()
    } else {
        sql_texts(path, text)
    }
}

// --- Rule 3: module docs ---

fn check_module_doc(path: &str, text: &str) -> Vec<Violation> {
    if text.starts_with("//!") {
        return Vec::new();
    }
    let message = "does not open with a `//!` line saying what it owns";
    vec![Violation::new(path, 1, message)]
}

// --- Rule 4: schema files and migrations ---

const MIGRATE_RS: &str = "src/store/migrate.rs";

/// `schema_files`: the names of the `.sql` files in `schema/`, which migrate.rs embeds all of,
/// in order, numbered from 0001 without gaps.
fn check_migrations(migrate_rs: &str, schema_files: &[String]) -> Vec<Violation> {
    let include = "include_str!(\"../../schema/";
    let code = lex(migrate_rs).code;
    let embedded: Vec<(usize, &str)> = (code.match_indices("include_str!("))
        .filter_map(|(at, _)| {
            let name = migrate_rs[at..].strip_prefix(include)?.split('"').next()?;
            Some((line_at(migrate_rs, at), name))
        })
        .collect();
    let mut violations = Vec::new();
    for (index, &(line, name)) in embedded.iter().enumerate() {
        let number = format!("{:04}_", index + 1);
        if !name.starts_with(&number) || !name.ends_with(".sql") {
            let position = index + 1;
            let message = format!("migration {position} is `{name}`, expected `{number}….sql`");
            violations.push(Violation::new(MIGRATE_RS, line, message));
        }
        if !schema_files.iter().any(|file| file == name) {
            let message = format!("embeds schema/{name}, which does not exist");
            violations.push(Violation::new(MIGRATE_RS, line, message));
        }
    }
    for file in schema_files {
        if !embedded.iter().any(|(_, name)| name == file) {
            let message = format!("not embedded by {MIGRATE_RS}");
            violations.push(Violation::new(&format!("schema/{file}"), 1, message));
        }
    }
    violations
}

// --- Rule 5: every job in the README's table and the example env file ---

const README_JOBS: &str = "## Jobs available";
const ENV_FILE_JOBS: &str = "# --- Jobs";

/// Every job's name, the literal its `fn name(&self)` returns, with the path and line.
fn job_names<'text>(files: &[(&'text str, &'text str)]) -> Vec<(&'text str, usize, &'text str)> {
    let signature = "fn name(&self) -> &'static str";
    let name_in = |body: &'text str| -> Option<&'text str> {
        let literal = body
            .trim_start()
            .strip_prefix('{')?
            .trim_start()
            .strip_prefix('"')?;
        let (name, after) = literal.split_once('"')?;
        after.trim_start().starts_with('}').then_some(name)
    };
    let mut names = Vec::new();
    for &(path, text) in files
        .iter()
        .filter(|(path, _)| is_under(path, &["src/jobs/"]))
    {
        let text = non_test_code(path, text);
        for (at, _) in text.match_indices(signature) {
            if let Some(name) = name_in(&text[at + signature.len()..]) {
                names.push((path, line_at(text, at), name));
            }
        }
    }
    names
}

/// The first word of each line of the section opened by `heading` (up to the next line
/// starting with `next`), after `prefix`, with its line.
fn listed<'text>(
    text: &'text str,
    heading: &str,
    next: &str,
    prefix: &str,
) -> Vec<(usize, &'text str)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    lines.by_ref().find(|(_, line)| line.starts_with(heading));
    let section = lines.take_while(|(_, line)| !line.starts_with(next));
    let word = |line: &'text str| line.strip_prefix(prefix)?.split([' ', '`']).next();
    section
        .filter_map(|(number, line)| Some((number, word(line)?)))
        .collect()
}

/// `files`: the sources under `src/`; `readme` and `env_file`: README.md and
/// systemd/edgecron.env. A listed job that no job names is reported too.
fn check_jobs_listed(files: &[(&str, &str)], readme: &str, env_file: &str) -> Vec<Violation> {
    let readme_jobs = listed(readme, README_JOBS, "## ", "| `");
    let env_file_jobs = listed(env_file, ENV_FILE_JOBS, "# --- ", "# ");
    let lists = [
        ("README.md", README_JOBS, readme_jobs),
        ("systemd/edgecron.env", ENV_FILE_JOBS, env_file_jobs),
    ];
    let jobs = job_names(files);
    let mut violations = Vec::new();
    for &(path, line, job) in &jobs {
        for (list, heading, names) in &lists {
            if !names.iter().any(|&(_, name)| name == job) {
                let message = format!("job `{job}` is missing from {list}'s `{heading}` section");
                violations.push(Violation::new(path, line, message));
            }
        }
    }
    for (list, heading, names) in &lists {
        for &(line, name) in names {
            if jobs.iter().any(|job| job.2 == name) {
                continue;
            }
            let message = format!("`{heading}` lists `{name}`, which no job under src/jobs/ is");
            violations.push(Violation::new(list, line, message));
        }
    }
    violations
}

// --- Rule 5b: every variable declared once, and listed where operators read ---

const VARIABLES_RS: &str = "src/config/variables.rs";
const README_VARIABLES: &str = "| variable | default | meaning |";

/// A declared variable: its name, its value when unset (`None`: nothing or worked out), and
/// the line it is declared on.
struct Declared<'text> {
    name: &'text str,
    unset_is: Option<&'text str>,
    line: usize,
}

/// The variables `src/config/variables.rs` declares, read from its `Variable { .. }` items.
fn declared_variables(text: &str) -> Vec<Declared<'_>> {
    let quoted_after = |text: &'_ str, key: &str| -> Option<(usize, usize)> {
        let start = text.find(key)? + key.len();
        Some((start, start + text[start..].find('"')?))
    };
    let mut variables = Vec::new();
    for (at, _) in text.match_indices(": Variable = Variable {") {
        let item = &text[at..];
        let item = &item[..item.find("};").unwrap_or(item.len())];
        let Some((start, end)) = quoted_after(item, "name: \"") else {
            continue;
        };
        let unset_is = quoted_after(item, "unset: Is(\"").map(|(from, to)| &item[from..to]);
        variables.push(Declared {
            name: &item[start..end],
            unset_is,
            line: line_at(text, at),
        });
    }
    variables
}

/// `EDGECRON_GRACE_<JOB>` names `EDGECRON_GRACE_CLEANUP`; any other only itself.
fn names_variable(declared: &str, name: &str) -> bool {
    match declared.strip_suffix("<JOB>") {
        Some(prefix) => name == declared || name.starts_with(prefix),
        None => name == declared,
    }
}

/// The env file's `# NAME=value` lines: name, value (before any `  # comment`) and line.
fn env_file_settings(env_file: &str) -> Vec<(&str, &str, usize)> {
    env_file
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let (name, value) = line.strip_prefix("# ")?.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            let value = value.split("  #").next().unwrap_or_default().trim_end();
            is_name.then_some((name, value, index + 1))
        })
        .collect()
}

/// The backticked names in the first cell of each row of the README's variable table, with
/// the row's second cell and line.
fn readme_variable_rows(readme: &str) -> Vec<(Vec<&str>, &str, usize)> {
    let mut lines = readme.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, line)| line.starts_with(README_VARIABLES));
    lines
        .skip(1)
        .take_while(|(_, line)| line.starts_with('|'))
        .filter_map(|(index, line)| {
            let mut cells = line.split('|').skip(1);
            let first = cells.next()?;
            let names = first.split('`').skip(1).step_by(2).collect();
            Some((names, cells.next()?.trim(), index + 1))
        })
        .collect()
}

/// Every declared variable is in the env file (with its value when unset) and in the README's
/// table (with it, when alone on its row); neither lists a variable that is not declared.
fn check_variables_listed(variables_rs: &str, readme: &str, env_file: &str) -> Vec<Violation> {
    let declared = declared_variables(variables_rs);
    let settings = env_file_settings(env_file);
    let rows = readme_variable_rows(readme);
    let env = "systemd/edgecron.env";
    let mut violations = Vec::new();
    if declared.is_empty() {
        violations.push(Violation::new(VARIABLES_RS, 1, "no variable declared"));
    }
    for variable in &declared {
        let at = |message: String| Violation::new(VARIABLES_RS, variable.line, message);
        let name = variable.name;
        let in_env = settings
            .iter()
            .filter(|(set, _, _)| names_variable(name, set))
            .collect::<Vec<_>>();
        match (in_env.first(), variable.unset_is) {
            (None, _) => violations.push(at(format!("`{name}` is missing from {env}"))),
            (Some((set, value, _)), Some(unset)) if *set == name && value != &unset => {
                violations.push(at(format!(
                    "{env} shows `{name}={value}`, but unset it is `{unset}`"
                )));
            }
            _ => {}
        }
        let row = rows.iter().find(|(names, _, _)| names.contains(&name));
        match (row, variable.unset_is) {
            (None, _) => violations.push(at(format!(
                "`{name}` is missing from README.md's variable table"
            ))),
            (Some((names, default, _)), Some(unset))
                if names.len() == 1 && *default != format!("`{unset}`") =>
            {
                violations.push(at(format!(
                    "README.md's table says `{name}` defaults to {default}, but unset it is `{unset}`"
                )));
            }
            _ => {}
        }
    }
    let is_declared = |name: &str| {
        declared
            .iter()
            .any(|variable| names_variable(variable.name, name))
    };
    for (name, _, line) in &settings {
        if !is_declared(name) {
            let message = format!("`{name}` is not declared in {VARIABLES_RS}");
            violations.push(Violation::new(env, *line, message));
        }
    }
    for (names, _, line) in &rows {
        for name in names.iter().filter(|name| !is_declared(name)) {
            let message = format!("`{name}` is not declared in {VARIABLES_RS}");
            violations.push(Violation::new("README.md", *line, message));
        }
    }
    violations
}

// --- Rule 6: file length ---

const MAX_LINES: usize = 600;

fn check_length(path: &str, text: &str) -> Vec<Violation> {
    let lines = text.lines().count();
    if lines <= MAX_LINES {
        return Vec::new();
    }
    let message = format!("{lines} lines, over {MAX_LINES}: split the file by concern");
    vec![Violation::new(path, MAX_LINES + 1, message)]
}

// --- Rule 7: module layers ---

/// The top-level modules by layer, lowest first. A module uses its own layer and lower ones;
/// a module missing here is a violation, so each new one is placed deliberately.
const LAYERS: &[&[&str]] = &[
    &[
        "clock", "io_error", "durable", "cron", "shutdown", "holder", "logging", "webhook",
    ],
    &["config"],
    &["store"],
    &["export", "siem", "site", "alert", "ping", "heartbeat"],
    &["jobs"],
    &["runner"],
    &["scheduler", "status", "check"],
    &[
        "demo", "http", "cli", "serve", "restore", "process", "main", "lib",
    ],
];

/// Uses of a higher layer allowed on purpose (at most 2), each explained in ARCHITECTURE.md
/// as "`a` → `b`".
const ALLOWED_UPWARD: &[(&str, &str)] = &[];
const MAX_ALLOWED_UPWARD: usize = 2;

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|modules| modules.contains(&module))
}

/// `src/cron.rs` → `cron`, `src/export/batch/read.rs` → `export`.
fn top_level_module(path: &str) -> Option<&str> {
    let first = path.strip_prefix("src/")?.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// Each use of a top-level module in a file's non-test code, with its line: the first part of
/// each path it names ([`named_paths`]). lib.rs only declares the modules.
fn module_uses(path: &str, text: &str) -> Vec<(String, usize)> {
    if path == "src/lib.rs" {
        return Vec::new();
    }
    named_paths(path, text)
        .into_iter()
        .filter_map(|(named, line)| Some((named.into_iter().next()?, line)))
        .collect()
}

/// Where each top-level module uses another: (from, to) → [(path, line)].
type Graph = BTreeMap<(String, String), Vec<(String, usize)>>;

fn module_graph(files: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for &(path, text) in files {
        let Some(from) = top_level_module(path) else {
            continue;
        };
        for (to, line) in module_uses(path, text)
            .into_iter()
            .filter(|(to, _)| to != from)
        {
            graph
                .entry((from.to_string(), to))
                .or_default()
                .push((path.to_string(), line));
        }
    }
    graph
}

/// Cycles among modules: for each module on one, a shortest cycle through it, unless one
/// found earlier passes through it.
fn cycles(graph: &Graph) -> Vec<Vec<&str>> {
    let mut successors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        successors.entry(from).or_default().push(to);
    }
    let (mut found, mut covered) = (Vec::new(), BTreeSet::new());
    for &start in successors.keys() {
        if covered.contains(start) {
            continue;
        }
        // Breadth first from `start` until an edge leads back to it.
        let mut parents: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(module) = queue.pop_front() {
            let next = successors.get(module).map_or(&[][..], Vec::as_slice);
            if next.contains(&start) {
                let mut cycle = vec![module];
                while let Some(&parent) = parents.get(cycle[cycle.len() - 1]) {
                    cycle.push(parent);
                }
                cycle.reverse();
                covered.extend(cycle.iter().copied());
                found.push(cycle);
                break;
            }
            for &to in next {
                if to != start && !parents.contains_key(to) {
                    parents.insert(to, module);
                    queue.push_back(to);
                }
            }
        }
    }
    found
}

/// `files`: the sources under `src/`; `allowed_upward`: the upward uses allowed on purpose.
fn check_layers(files: &[(&str, &str)], allowed_upward: &[(&str, &str)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut unplaced = BTreeSet::new();
    for &(path, _) in files {
        let module = top_level_module(path).unwrap_or(path);
        if layer(module).is_none() && unplaced.insert(module) {
            let message = format!("module `{module}` has no layer: place it in LAYERS");
            violations.push(Violation::new(path, 1, message));
        }
    }
    let graph = module_graph(files);
    for ((from, to), places) in &graph {
        let (Some(from_layer), Some(to_layer)) = (layer(from), layer(to)) else {
            continue;
        };
        if from_layer >= to_layer || allowed_upward.contains(&(from.as_str(), to.as_str())) {
            continue;
        }
        for (path, line) in places {
            let message = format!(
                "`{from}` (layer {from_layer}) uses `{to}` (layer {to_layer}), upward and not in ALLOWED_UPWARD"
            );
            violations.push(Violation::new(path, *line, message));
        }
    }
    violations.extend(cycle_violations(&graph, "module"));
    violations
}

/// Each cycle of `graph` (of modules or of files) as one violation at its first use, naming
/// each step with where it is taken.
fn cycle_violations(graph: &Graph, kind: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for cycle in cycles(graph) {
        let first_use = |index: usize| {
            let edge = (
                cycle[index].to_string(),
                cycle[(index + 1) % cycle.len()].to_string(),
            );
            (&graph[&edge][0], edge)
        };
        let steps: Vec<String> = (0..cycle.len())
            .map(first_use)
            .map(|((path, line), (from, to))| format!("`{from}` → `{to}` at {path}:{line}"))
            .collect();
        let ((path, line), _) = first_use(0);
        let message = format!("{kind} cycle: {}", steps.join(", "));
        violations.push(Violation::new(path, *line, message));
    }
    violations
}

/// The store has one API style: a table module's functions take `&Store`; only the pool's own
/// methods (`src/store/mod.rs`) are on `Store`.
fn check_store_api_style(path: &str, text: &str) -> Vec<Violation> {
    if path == "src/store/mod.rs" {
        return Vec::new();
    }
    non_test_code(path, text)
        .match_indices("impl Store {")
        .map(|(at, _)| {
            let message = "methods on Store: a table module's functions take `store: &Store`";
            Violation::new(path, line_at(text, at), message)
        })
        .collect()
}

/// `src/lib.rs` declares the modules layer by layer, lowest first, as `LAYERS` orders them.
fn check_lib_order(lib_rs: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut highest = 0;
    for (index, line) in lib_rs.lines().enumerate() {
        let declared = line
            .trim_start_matches("pub ")
            .strip_prefix("mod ")
            .and_then(|rest| rest.split(';').next());
        let Some(module) = declared else { continue };
        let Some(level) = layer(module) else {
            let message = format!("`{module}` is in no layer of LAYERS");
            violations.push(Violation::new("src/lib.rs", index + 1, message));
            continue;
        };
        if level < highest {
            let message = format!("`{module}` (layer {level}) is declared after layer {highest}");
            violations.push(Violation::new("src/lib.rs", index + 1, message));
        }
        highest = highest.max(level);
    }
    violations
}

/// ALLOWED_UPWARD stays short and upward, and `architecture` (ARCHITECTURE.md) explains each
/// entry. `tidy_rs`: this file, to point at the list.
fn check_allowed_upward(
    allowed: &[(&str, &str)],
    architecture: &str,
    tidy_rs: &str,
) -> Vec<Violation> {
    let declared = tidy_rs
        .lines()
        .position(|line| line.starts_with("const ALLOWED_UPWARD"));
    let line = declared.map_or(1, |index| index + 1);
    let at_list = |message: String| Violation::new("tests/tidy.rs", line, message);
    let mut violations = Vec::new();
    if allowed.len() > MAX_ALLOWED_UPWARD {
        let count = allowed.len();
        violations.push(at_list(format!(
            "{count} upward uses allowed, at most {MAX_ALLOWED_UPWARD}"
        )));
    }
    for (from, to) in allowed {
        let arrow = format!("`{from}` → `{to}`");
        if !architecture.contains(&arrow) {
            violations.push(at_list(format!(
                "{arrow} is allowed, but ARCHITECTURE.md does not say why"
            )));
        }
        let layers = layer(from).zip(layer(to));
        if layers.is_none_or(|(from_layer, to_layer)| from_layer >= to_layer) {
            violations.push(at_list(format!(
                "{arrow} is allowed, but is not upward in LAYERS"
            )));
        }
    }
    violations
}

/// A file's module path: `src/store/capture/gap.rs` → `store::capture::gap`,
/// `src/store/mod.rs` → `store`, `src/lib.rs` and `src/main.rs` → the crate root.
fn file_module(path: &str) -> Vec<String> {
    let relative = path.strip_prefix("src/").unwrap_or(path);
    let relative = relative.strip_suffix(".rs").unwrap_or(relative);
    let mut segments: Vec<String> = relative.split('/').map(String::from).collect();
    if matches!(
        segments.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segments.pop();
    }
    segments
}

/// Every module path a file's non-test code names from `crate::`, `edgecron::`, `super::` or
/// `self::`, from the crate root, with its line; `{…}` groups are expanded.
fn named_paths(path: &str, text: &str) -> Vec<(Vec<String>, usize)> {
    let code = lex(non_test_code(path, text)).code;
    // `self` is the file's module (a `mod.rs` is its directory's), `super` the one above.
    let own = file_module(path);
    let parent = |module: &[String]| module[..module.len().saturating_sub(1)].to_vec();
    let mut named = Vec::new();
    for root in ["crate::", "edgecron::", "super::", "self::"] {
        // Not the second `super` of `super::super::`, which the first one reads.
        let starts = word_positions(&code, root).filter(|&at| !code[..at].ends_with("::"));
        for at in starts {
            let mut base = match root {
                "crate::" | "edgecron::" => Vec::new(),
                "super::" => parent(&own),
                _ => own.clone(),
            };
            let mut rest = &code[at + root.len()..];
            while let Some(after) = rest.strip_prefix("super::") {
                base = parent(&base);
                rest = after;
            }
            let line = line_at(&code, at);
            for path in expand(rest, base) {
                named.push((path, line));
            }
        }
    }
    named
}

/// The paths `text` (what follows a root and its `::`) names, each appended to `base`: `a::b`,
/// or a group `{a::{b, c}, d}` (`self` in a group is the path before it).
fn expand(text: &str, base: Vec<String>) -> Vec<Vec<String>> {
    let mut path = base;
    let mut rest = text;
    loop {
        let name: String = rest
            .chars()
            .take_while(|&c| is_identifier_char(c))
            .collect();
        if name.is_empty() {
            break;
        }
        if name != "self" {
            path.push(name.clone());
        }
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![path],
        }
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![path];
    };
    // Split the group's items at its top-level commas.
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (offset, character) in group.char_indices() {
        match character {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..offset]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..offset]);
                start = offset + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .flat_map(|item| expand(item.trim_start(), path.clone()))
        .collect()
}

/// The file a module path leads to: its longest prefix that is a file of `modules`.
fn file_of<'a>(path: &[String], modules: &BTreeMap<Vec<String>, &'a str>) -> Option<&'a str> {
    (0..=path.len())
        .rev()
        .find_map(|length| modules.get(&path[..length]).copied())
}

/// Where each file uses another file: (from, to) → [(path, line)]. A module naming its own
/// children is not an import (it declares them), so those edges are left out.
fn file_graph(files: &[(&str, &str)]) -> Graph {
    let modules: BTreeMap<Vec<String>, &str> = files
        .iter()
        .filter(|(path, _)| *path != "src/main.rs")
        .map(|&(path, _)| (file_module(path), path))
        .collect();
    let mut graph = Graph::new();
    for &(from, text) in files {
        let from_module = file_module(from);
        for (path, line) in named_paths(from, text) {
            let Some(to) = file_of(&path, &modules) else {
                continue;
            };
            if to == from || file_module(to).starts_with(&from_module) {
                continue;
            }
            graph
                .entry((from.to_string(), to.to_string()))
                .or_default()
                .push((from.to_string(), line));
        }
    }
    graph
}

/// Import cycles among files (a module's own children left out, as above).
fn check_file_cycles(files: &[(&str, &str)]) -> Vec<Violation> {
    cycle_violations(&file_graph(files), "file")
}

/// Tests ARCHITECTURE.md names (`module::…::a_test_name`, or `tests/file.rs`) that do not exist:
/// a name whose last part has two underscores or more is a test's, defined as a `fn` in the
/// integration test file of its first part (`tests/listener.rs`) or under `src/` (`http::`
/// is `tests/http.rs` or `src/http/`).
fn check_named_tests(architecture: &str, files: &[(&str, &str)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, line) in architecture.lines().enumerate() {
        for quoted in line.split('`').skip(1).step_by(2) {
            let missing = if let Some(file) = quoted.strip_prefix("tests/") {
                let exists = files.iter().any(|(path, _)| *path == quoted);
                (file.ends_with(".rs") && !exists).then(|| format!("`{quoted}` does not exist"))
            } else {
                missing_test(quoted, files)
            };
            if let Some(message) = missing {
                violations.push(Violation::new("ARCHITECTURE.md", index + 1, message));
            }
        }
    }
    violations
}

fn missing_test(quoted: &str, files: &[(&str, &str)]) -> Option<String> {
    let parts: Vec<&str> = quoted.split("::").collect();
    let name = parts.last()?;
    let is_test_path = parts.len() >= 2
        && name.matches('_').count() >= 2
        && parts
            .iter()
            .all(|part| part.chars().all(is_identifier_char));
    if !is_test_path {
        return None;
    }
    // `http::…` may be the integration tests of `tests/http.rs` or the unit tests of `src/http/`.
    let integration = format!("tests/{}.rs", parts[0]);
    let under_src = format!("src/{}", parts[0]);
    let defines = |(path, text): &&(&str, &str)| {
        let place = *path == integration
            || path.starts_with(&format!("{under_src}/"))
            || *path == format!("{under_src}.rs");
        place && word_positions(text, &format!("fn {name}")).next().is_some()
    };
    let found = files.iter().any(|file| defines(&file));
    (!found).then(|| format!("`{quoted}`: no test `{name}` there"))
}

// --- The tree ---

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {relative}: {error}"))
}

/// The names of the entries of a directory of the repository, sorted.
fn entry_names(directory: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(directory);
    let entries = fs::read_dir(path).unwrap_or_else(|error| panic!("listing {directory}: {error}"));
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap_or_else(|error| panic!("listing {directory}: {error}")))
        .map(|entry| entry.file_name().into_string().expect("a UTF-8 file name"))
        .collect();
    names.sort();
    names
}

/// Every `.rs` file under `src/`, as (path, text), sorted by path.
fn source_files() -> Vec<(String, String)> {
    let (mut files, mut directories) = (Vec::new(), vec!["src".to_string()]);
    while let Some(directory) = directories.pop() {
        for name in entry_names(&directory) {
            let path = format!("{directory}/{name}");
            if name.ends_with(".rs") {
                files.push((path.clone(), read(&path)));
            } else if Path::new(env!("CARGO_MANIFEST_DIR")).join(&path).is_dir() {
                directories.push(path);
            }
        }
    }
    files.sort();
    files
}

fn each_source_file(check: fn(&str, &str) -> Vec<Violation>) -> Vec<Violation> {
    source_files()
        .iter()
        .flat_map(|(path, text)| check(path, text))
        .collect()
}

fn borrowed(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_str()))
        .collect()
}

#[test]
fn edges_hold_no_sql() {
    assert_tidy(
        "edges hold no SQL",
        &each_source_file(check_edge_holds_no_sql),
    );
}

#[test]
fn sql_text_lives_in_the_store_the_jobs_and_the_demo() {
    assert_tidy(
        "SQL text in its place",
        &each_source_file(check_sql_in_its_place),
    );
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    assert_tidy("module docs", &each_source_file(check_module_doc));
}

#[test]
fn schema_files_and_migrations_agree() {
    let mut schema_files = entry_names("schema");
    schema_files.retain(|name| name.ends_with(".sql"));
    assert_tidy(
        "migrations",
        &check_migrations(&read(MIGRATE_RS), &schema_files),
    );
}

#[test]
fn every_job_is_listed_in_the_readme_and_the_env_file() {
    let (files, readme, env_file) = (
        source_files(),
        read("README.md"),
        read("systemd/edgecron.env"),
    );
    assert_tidy(
        "jobs listed",
        &check_jobs_listed(&borrowed(&files), &readme, &env_file),
    );
}

#[test]
fn every_variable_is_in_the_env_file_and_the_readme() {
    let (variables, readme, env_file) = (
        read(VARIABLES_RS),
        read("README.md"),
        read("systemd/edgecron.env"),
    );
    assert_tidy(
        "variables listed",
        &check_variables_listed(&variables, &readme, &env_file),
    );
}

#[test]
fn the_store_has_one_api_style() {
    assert_tidy("store API style", &each_source_file(check_store_api_style));
}

#[test]
fn no_source_file_is_over_600_lines() {
    assert_tidy("file length", &each_source_file(check_length));
}

#[test]
fn modules_use_their_own_layer_and_lower_ones_without_cycles() {
    let mut violations = check_layers(&borrowed(&source_files()), ALLOWED_UPWARD);
    let (architecture, tidy_rs) = (read("ARCHITECTURE.md"), read("tests/tidy.rs"));
    violations.extend(check_allowed_upward(
        ALLOWED_UPWARD,
        &architecture,
        &tidy_rs,
    ));
    violations.extend(check_lib_order(&read("src/lib.rs")));
    assert_tidy("module layers", &violations);
}

#[test]
fn files_import_one_another_in_no_cycle() {
    assert_tidy(
        "file cycles",
        &check_file_cycles(&borrowed(&source_files())),
    );
}

#[test]
fn every_test_architecture_md_names_exists() {
    let mut files = source_files();
    for name in entry_names("tests") {
        if name.ends_with(".rs") {
            let path = format!("tests/{name}");
            let text = read(&path);
            files.push((path, text));
        }
    }
    let architecture = read("ARCHITECTURE.md");
    assert_tidy(
        "named tests",
        &check_named_tests(&architecture, &borrowed(&files)),
    );
}

// --- Each rule on small examples ---

mod examples {
    use super::*;

    /// The violations as `path:line: message`.
    fn shown(violations: Vec<Violation>) -> Vec<String> {
        violations.iter().map(ToString::to_string).collect()
    }

    fn lines(violations: Vec<Violation>) -> Vec<usize> {
        violations.iter().map(|found| found.line).collect()
    }

    #[test]
    fn the_lexer_tells_literals_from_code_and_comments() {
        let source = "let quote = '\"'; // \"not a literal\"\n/* a /* nested */ \"comment\" */\n\
                      fn f<'a>(x: &'a str) -> &'a str { r#\"raw \"quoted\"\"# }\nb\"bytes\\\"\"";
        let lexed = lex(source);
        assert_eq!(
            lexed.literals,
            [(3, "raw \"quoted\"".into()), (4, "bytes\\\"".into())]
        );
        assert_eq!(lexed.code.lines().count(), 4);
        assert!(lexed.code.contains("fn f<'a>(x: &'a str)") && !lexed.code.contains("nested"));
    }

    #[test]
    fn sql_is_found_by_its_statements_not_by_prose() {
        assert_eq!(
            find_sql("x\n  SELECT id\n FROM t"),
            Some((4, "SELECT ... FROM"))
        );
        assert_eq!(
            find_sql("INSERT OR IGNORE INTO t VALUES (1)"),
            Some((0, "INSERT ... INTO"))
        );
        assert_eq!(
            find_sql("WITH due AS (SELECT 1) SELECT * FROM due"),
            Some((0, "WITH ... AS ("))
        );
        for prose in [
            "select a job from the list",
            "SELECT is upper case",
            "DELETE_FROM_QUEUE",
            "begin immediate work",
            "Drop the table",
            "rusqlite::Connection",
        ] {
            assert_eq!(find_sql(prose), None, "{prose}");
        }
    }

    #[test]
    fn an_edge_naming_rusqlite_or_holding_sql_is_reported() {
        let broken = "//! Routes.\nuse rusqlite::Connection;\nfn f() {\n    run(\"DELETE FROM job_runs\");\n}\n";
        assert_eq!(
            shown(check_edge_holds_no_sql("src/http/routes.rs", broken)),
            [
                "src/http/routes.rs:2: an edge names rusqlite: ask the store",
                "src/http/routes.rs:4: SQL text (`DELETE FROM`) in a string literal",
            ]
        );
        assert_eq!(
            lines(check_edge_holds_no_sql("src/cli/mod.rs", broken)),
            [2, 4]
        );
        assert!(check_edge_holds_no_sql("src/runner.rs", broken).is_empty());
        let clean = "//! Routes: rusqlite stays in the store.\n/// Never `DELETE FROM` here.\n\
                     fn f() { say(\"select a job from the list\") }\n\
                     #[cfg(test)]\nmod tests {\n    use rusqlite::Connection;\n    const SQL: &str = \"DELETE FROM t\";\n}\n";
        assert!(check_edge_holds_no_sql("src/http/routes.rs", clean).is_empty());
    }

    #[test]
    fn sql_outside_the_store_the_jobs_and_the_demo_is_reported() {
        let broken = "//! Alerts.\nconst QUEUE: &str = \"\n    INSERT INTO alert_outbox (body)\n    VALUES (?1)\";\n\
                      const CLOSE: &str = r#\"DELETE FROM job_alert_conditions WHERE \"job\" = ?1\"#;\n";
        assert_eq!(
            lines(check_sql_in_its_place("src/alert.rs", broken)),
            [3, 5]
        );
        assert_eq!(
            lines(check_sql_in_its_place("src/export/batch/read.rs", broken)),
            [3, 5]
        );
        // SQL's places, and test code, which is not checked.
        for not_reported in [
            "src/store/runs.rs",
            "src/jobs/cleanup.rs",
            "src/demo/mod.rs",
            "src/runner/tests.rs",
        ] {
            let found = check_sql_in_its_place(not_reported, broken);
            assert!(found.is_empty(), "{not_reported}");
        }
        let clean =
            "//! Alerts.\n// DELETE FROM is the store's.\nfn f(c: &rusqlite::Connection) {}\n";
        assert!(check_sql_in_its_place("src/alert.rs", clean).is_empty());
    }

    #[test]
    fn a_file_without_a_module_doc_is_reported() {
        let broken = shown(check_module_doc(
            "src/cron.rs",
            "/// An item's doc.\nfn f() {}\n",
        ));
        assert_eq!(
            broken,
            ["src/cron.rs:1: does not open with a `//!` line saying what it owns"]
        );
        assert!(check_module_doc("src/cron.rs", "//! Cron expressions.\n").is_empty());
    }

    #[test]
    fn migrations_out_of_step_with_schema_are_reported() {
        let embed = |names: &[&str]| -> String {
            let line = |name: &&str| format!("    sql: include_str!(\"../../schema/{name}\"),\n");
            names.iter().map(line).collect()
        };
        let schema = ["0001_a.sql", "0002_b.sql", "0003_c.sql"].map(String::from);
        assert!(
            check_migrations(&embed(&["0001_a.sql", "0002_b.sql", "0003_c.sql"]), &schema)
                .is_empty()
        );
        let swapped =
            check_migrations(&embed(&["0001_a.sql", "0003_c.sql", "0002_b.sql"]), &schema);
        assert_eq!(lines(swapped), [2, 3]);
        let gap = check_migrations(&embed(&["0001_a.sql", "0003_c.sql", "0004_d.sql"]), &schema);
        assert_eq!(
            shown(gap),
            [
                "src/store/migrate.rs:2: migration 2 is `0003_c.sql`, expected `0002_….sql`",
                "src/store/migrate.rs:3: migration 3 is `0004_d.sql`, expected `0003_….sql`",
                "src/store/migrate.rs:3: embeds schema/0004_d.sql, which does not exist",
                "schema/0002_b.sql:1: not embedded by src/store/migrate.rs",
            ]
        );
    }

    const JOB: &str = "//! A job.\nimpl Job for Cleanup {\n    fn name(&self) -> &'static str {\n        \"cleanup\"\n    }\n}\n";
    const README: &str = "## Jobs available\n\n| job | schedule |\n|---|---|\n| `cleanup` | `30 4 * * *` |\n\n## Next\n| `later` |\n";
    const ENV_FILE: &str = "# --- Logs\n# RUST_LOG=info\n\n# --- Jobs\n# cleanup   30 4 * * *\n";

    #[test]
    fn a_job_missing_from_the_readme_or_the_env_file_is_reported() {
        let files = [("src/jobs/cleanup.rs", JOB)];
        assert!(check_jobs_listed(&files, README, ENV_FILE).is_empty());
        assert_eq!(
            shown(check_jobs_listed(
                &files,
                README,
                "# --- Logs\n# cleanup is a job\n"
            )),
            [
                "src/jobs/cleanup.rs:3: job `cleanup` is missing from systemd/edgecron.env's `# --- Jobs` section"
            ]
        );
        let renamed = README.replace("`cleanup`", "`clean-up`");
        assert_eq!(
            shown(check_jobs_listed(&files, &renamed, ENV_FILE)),
            [
                "src/jobs/cleanup.rs:3: job `cleanup` is missing from README.md's `## Jobs available` section",
                "README.md:5: `## Jobs available` lists `clean-up`, which no job under src/jobs/ is",
            ]
        );
        let only_in_a_test = format!("//! A job.\n#[cfg(test)]\nmod tests {{\n{}}}\n", &JOB[11..]);
        assert!(job_names(&[("src/jobs/cleanup.rs", &only_in_a_test)]).is_empty());
    }

    const VARIABLES: &str = "//! Variables.\npub const EXPORT_BATCH_SIZE: Variable = Variable {\n    name: \"EXPORT_BATCH_SIZE\",\n    unset: Is(\"10000\"),\n};\npub const EDGECRON_GRACE_JOB: Variable = Variable {\n    name: \"EDGECRON_GRACE_<JOB>\",\n    unset: Is(\"300\"),\n};\n";
    const VARIABLE_TABLE: &str = "| variable | default | meaning |\n|---|---|---|\n| `EXPORT_BATCH_SIZE` | `10000` | rows |\n| `EDGECRON_GRACE_<JOB>` | `300` | late |\n\n";
    const VARIABLE_ENV: &str =
        "# EXPORT_BATCH_SIZE=10000\n# EDGECRON_GRACE_CLEANUP=120     # a job's\n";

    #[test]
    fn a_variable_missing_from_the_env_file_or_the_readme_or_not_declared_is_reported() {
        assert!(check_variables_listed(VARIABLES, VARIABLE_TABLE, VARIABLE_ENV).is_empty());
        let stale_default = VARIABLE_ENV.replace("=10000", "=5000");
        let undeclared = format!("{VARIABLE_ENV}# EXPORT_BATCHSIZE=1\n");
        assert_eq!(
            shown(check_variables_listed(
                VARIABLES,
                VARIABLE_TABLE,
                &stale_default
            )),
            [
                "src/config/variables.rs:2: systemd/edgecron.env shows `EXPORT_BATCH_SIZE=5000`, but unset it is `10000`"
            ]
        );
        assert_eq!(
            shown(check_variables_listed(
                VARIABLES,
                VARIABLE_TABLE,
                &undeclared
            )),
            [
                "systemd/edgecron.env:3: `EXPORT_BATCHSIZE` is not declared in src/config/variables.rs"
            ]
        );
        let no_grace = VARIABLE_TABLE.replace("| `EDGECRON_GRACE_<JOB>` | `300` | late |\n", "");
        assert_eq!(
            shown(check_variables_listed(VARIABLES, &no_grace, VARIABLE_ENV)),
            [
                "src/config/variables.rs:6: `EDGECRON_GRACE_<JOB>` is missing from README.md's variable table"
            ]
        );
        let other_default = VARIABLE_TABLE.replace("`10000`", "`500`");
        assert_eq!(
            shown(check_variables_listed(
                VARIABLES,
                &other_default,
                VARIABLE_ENV
            )),
            [
                "src/config/variables.rs:2: README.md's table says `EXPORT_BATCH_SIZE` defaults to `500`, but unset it is `10000`"
            ]
        );
    }

    #[test]
    fn a_file_over_600_lines_is_reported() {
        let broken = shown(check_length("src/demo.rs", &"x\n".repeat(601)));
        assert_eq!(
            broken,
            ["src/demo.rs:601: 601 lines, over 600: split the file by concern"]
        );
        assert!(check_length("src/demo.rs", &"x\n".repeat(600)).is_empty());
    }

    #[test]
    fn upward_uses_cycles_and_unplaced_modules_are_reported() {
        let clean = [
            ("src/lib.rs", "pub mod jobs;\npub mod store;\n"),
            (
                "src/jobs/mod.rs",
                "use crate::{\n    clock,\n    store::{self, Store},\n};\n",
            ),
            ("src/main.rs", "fn main() { edgecron::cli::run() }\n"),
        ];
        assert!(check_layers(&clean, &[]).is_empty());
        let broken = [
            ("src/store/mod.rs", "use crate::{clock, jobs::Job};\n"),
            ("src/export/mod.rs", "fn f() { crate::siem::ship() }\n"),
            (
                "src/siem/mod.rs",
                "// crate::store\nuse crate::export::storage;\n",
            ),
            ("src/queue.rs", "//! A new module.\n"),
            (
                "src/alert.rs",
                "#[cfg(test)]\nmod tests {\n    use crate::runner;\n}\n",
            ),
        ];
        assert_eq!(
            shown(check_layers(&broken, &[])),
            [
                "src/queue.rs:1: module `queue` has no layer: place it in LAYERS",
                "src/store/mod.rs:1: `store` (layer 2) uses `jobs` (layer 4), upward and not in ALLOWED_UPWARD",
                "src/export/mod.rs:1: module cycle: `export` → `siem` at src/export/mod.rs:1, `siem` → `export` at src/siem/mod.rs:2",
            ]
        );
        assert!(check_layers(&broken[..1], &[("store", "jobs")]).is_empty());
    }

    #[test]
    fn methods_on_store_outside_the_pool_are_reported() {
        let broken = "//! Runs.\nimpl Store {\n    pub fn list(&self) {}\n}\n";
        assert_eq!(
            lines(check_store_api_style("src/store/runs/mod.rs", broken)),
            [2]
        );
        assert!(check_store_api_style("src/store/mod.rs", broken).is_empty());
        let clean = "//! Runs.\npub fn list(store: &Store) {}\n";
        assert!(check_store_api_style("src/store/runs/mod.rs", clean).is_empty());
    }

    #[test]
    fn lib_rs_declaring_a_module_before_a_lower_layer_is_reported() {
        let clean = "//! Lib.\n// 0.\nmod clock; // time\n// 1.\nmod config;\npub mod cli;\n";
        assert!(check_lib_order(clean).is_empty());
        let broken = "//! Lib.\npub mod cli;\nmod clock;\nmod nowhere;\n";
        assert_eq!(
            shown(check_lib_order(broken)),
            [
                "src/lib.rs:3: `clock` (layer 0) is declared after layer 7",
                "src/lib.rs:4: `nowhere` is in no layer of LAYERS",
            ]
        );
    }

    #[test]
    fn allowed_upward_uses_are_few_upward_and_explained() {
        let architecture = "The store calls back: `store` → `jobs`.\n";
        let tidy_rs = "//! Tidy.\nconst ALLOWED_UPWARD: &[(&str, &str)] = &[];\n";
        assert!(check_allowed_upward(&[("store", "jobs")], architecture, tidy_rs).is_empty());
        assert_eq!(
            shown(check_allowed_upward(
                &[("store", "runner"), ("jobs", "store")],
                "`jobs` → `store`",
                tidy_rs
            )),
            [
                "tests/tidy.rs:2: `store` → `runner` is allowed, but ARCHITECTURE.md does not say why",
                "tests/tidy.rs:2: `jobs` → `store` is allowed, but is not upward in LAYERS",
            ]
        );
        let too_many = [("store", "jobs"); 3];
        assert_eq!(
            lines(check_allowed_upward(&too_many, architecture, tidy_rs)),
            [2]
        );
    }

    #[test]
    fn a_cycle_between_files_is_reported_but_a_module_naming_its_children_is_not() {
        let parent = "//! Jobs.\nmod a;\nmod b;\npub use a::A;\npub trait Job {}\n";
        let a = "//! A.\nuse super::Job;\nuse super::b::helper;\n";
        let b = "//! B.\nuse crate::jobs::{Job, a::{self, A}};\n";
        let broken = [
            ("src/jobs/mod.rs", parent),
            ("src/jobs/a.rs", a),
            ("src/jobs/b.rs", b),
        ];
        assert_eq!(
            shown(check_file_cycles(&broken)),
            [
                "src/jobs/a.rs:3: file cycle: `src/jobs/a.rs` → `src/jobs/b.rs` at src/jobs/a.rs:3, \
                 `src/jobs/b.rs` → `src/jobs/a.rs` at src/jobs/b.rs:2"
            ]
        );
        let b = "//! B.\nuse crate::jobs::Job;\n#[cfg(test)]\nmod tests {\n    use super::super::a::A;\n}\n";
        let clean = [
            ("src/jobs/mod.rs", parent),
            ("src/jobs/a.rs", a),
            ("src/jobs/b.rs", b),
        ];
        assert!(check_file_cycles(&clean).is_empty());
    }

    #[test]
    fn a_test_architecture_md_names_that_does_not_exist_is_reported() {
        let files = [
            (
                "tests/listener.rs",
                "fn refuses_bodies_on_their_head() {}\n",
            ),
            ("src/http/tests.rs", "fn at_the_limit_it_makes_way() {}\n"),
        ];
        let architecture = "(`listener::refuses_bodies_on_their_head`, `http::tests::at_the_limit_it_makes_way`)\n\
                            `routes::gate` and `tests/listener.rs`\n\
                            (`listener::a_test_since_renamed`, `tests/gone.rs`, `http::at_the_limit_it_makes_way`)\n";
        assert_eq!(
            shown(check_named_tests(architecture, &files)),
            [
                "ARCHITECTURE.md:3: `listener::a_test_since_renamed`: no test `a_test_since_renamed` there",
                "ARCHITECTURE.md:3: `tests/gone.rs` does not exist",
            ]
        );
    }
}
