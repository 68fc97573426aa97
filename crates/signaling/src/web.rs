//! The web client, embedded so `lumen` stays one file. The pages are plain ES
//! modules in `web-client/`, with no build step.

/// (file name, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        HTML,
        include_str!("../../../web-client/index.html"),
    ),
    (
        "broadcast.html",
        HTML,
        include_str!("../../../web-client/broadcast.html"),
    ),
    (
        "watch.html",
        HTML,
        include_str!("../../../web-client/watch.html"),
    ),
    ("index.js", JS, include_str!("../../../web-client/index.js")),
    (
        "broadcast.js",
        JS,
        include_str!("../../../web-client/broadcast.js"),
    ),
    ("watch.js", JS, include_str!("../../../web-client/watch.js")),
    ("lumen.js", JS, include_str!("../../../web-client/lumen.js")),
    (
        "setup.html",
        HTML,
        include_str!("../../../web-client/setup.html"),
    ),
    (
        "login.html",
        HTML,
        include_str!("../../../web-client/login.html"),
    ),
    (
        "signup.html",
        HTML,
        include_str!("../../../web-client/signup.html"),
    ),
    (
        "dashboard.html",
        HTML,
        include_str!("../../../web-client/dashboard.html"),
    ),
    (
        "admin.html",
        HTML,
        include_str!("../../../web-client/admin.html"),
    ),
    ("setup.js", JS, include_str!("../../../web-client/setup.js")),
    ("login.js", JS, include_str!("../../../web-client/login.js")),
    (
        "signup.js",
        JS,
        include_str!("../../../web-client/signup.js"),
    ),
    (
        "dashboard.js",
        JS,
        include_str!("../../../web-client/dashboard.js"),
    ),
    ("admin.js", JS, include_str!("../../../web-client/admin.js")),
    (
        "vod.html",
        HTML,
        include_str!("../../../web-client/vod.html"),
    ),
    ("vod.js", JS, include_str!("../../../web-client/vod.js")),
    (
        "moderation.html",
        HTML,
        include_str!("../../../web-client/moderation.html"),
    ),
    (
        "moderation.js",
        JS,
        include_str!("../../../web-client/moderation.js"),
    ),
    (
        "cluster.html",
        HTML,
        include_str!("../../../web-client/cluster.html"),
    ),
    (
        "cluster.js",
        JS,
        include_str!("../../../web-client/cluster.js"),
    ),
    (
        "style.css",
        CSS,
        include_str!("../../../web-client/style.css"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A file of the web client by name.
pub(crate) fn file(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ct, body)| (*ct, *body))
}
