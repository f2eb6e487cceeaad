// The API designer: calls the apinode extension's REST API (apinode/api/...) of the Jupyter
// server that serves this page, with Jupyter's own login cookie and XSRF token.
"use strict";

const base = new URL("..", location.href); // this page is <base_url>apinode/designer
const $ = (selector) => document.querySelector(selector);
let notebook = null; // {path, services: [service.json objects]}
let loads = {};      // service id -> its last deployment, as POST apinode/api/dev/deploy says

function xsrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function send(method, path, body, accept = "application/json") {
  return fetch(new URL(path, base), {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: accept, "X-XSRFToken": xsrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function call(method, path, body) {
  const response = await send(method, path, body);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.message || `${response.status} ${response.statusText}`);
  }
  return answer;
}

// POSTs and reads the answer's server-sent events as they arrive: onEvent(name, data) for each.
async function callStreamed(path, body, onEvent) {
  const response = await send("POST", path, body, "text/event-stream");
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(answer.message || `${response.status} ${response.statusText}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const name = (lines.find((line) => line.startsWith("event: ")) || "event: message").slice(7);
      const data = lines.filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      onEvent(name, JSON.parse(data));
    }
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function say(text, kind = "") {
  const status = $("#status");
  status.textContent = text;
  status.className = kind;
}

// Runs an action with every button off, its error shown in the status line.
async function busy(message, action) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((button) => { button.disabled = true; });
  say(message, "busy");
  try {
    await action();
  } catch (error) {
    say(error.message, "error");
  } finally {
    buttons.forEach((button) => { button.disabled = button.dataset.off === "true"; });
    $("#deploy").disabled = !notebook || notebook.services.length === 0;
  }
}

function loadCell(service, endpoint) {
  const deployment = loads[service];
  const load = deployment && deployment.endpoints[endpoint];
  if (!load) return element("td", { class: "load unknown", text: "not deployed yet" });
  if (load.loaded) return element("td", { class: "load ok", text: "✓ loads" });
  const details = element("details", {}, element("summary", { text: load.error || "does not load" }));
  if (load.traceback) details.append(element("pre", { text: load.traceback }));
  return element("td", { class: "load bad" }, "✗ ", details);
}

function renderServices() {
  const section = $("#services");
  section.replaceChildren();
  for (const service of notebook.services) {
    const bundle = new URL("apinode/api/bundle", base);
    bundle.search = new URLSearchParams({ path: notebook.path, service: service.id });
    const rows = service.endpoints.map((endpoint) => {
      const count = endpoint.testQueries.length;
      const button = element("button", {
        class: "play", type: "button", "data-endpoint": `${service.id}/${endpoint.id}`,
        "data-off": String(count === 0), text: "Play test queries",
        onclick: () => play(service.id, endpoint.id),
      });
      button.disabled = count === 0;
      return element("tr", { "data-endpoint": `${service.id}/${endpoint.id}` },
        element("td", { class: "code", text: endpoint.id }),
        element("td", { class: "code", text: endpoint.function }),
        element("td", { text: String(count) }),
        loadCell(service.id, endpoint.id),
        element("td", {}, button));
    });
    const head = element("tr", {}, ...["endpoint", "function", "test queries", "on the dev server", ""]
      .map((name) => element("th", { text: name })));
    const card = element("div", { class: "service", "data-service": service.id },
      element("header", {}, element("h2", { text: service.id }),
        element("a", { class: "button bundle", href: bundle.href, download: "", text: "Download bundle" })));
    if (loads[service.id]) {
      const kind = loads[service.id].switched ? "ok" : "bad";
      const summary = element("p", { class: `deployment ${kind}`, text: loads[service.id].summary });
      if (loads[service.id].switched) {
        summary.append(" ", element("a", {
          class: "docs", href: loads[service.id].docs, target: "_blank", rel: "noopener", text: "API documentation",
        }));
      }
      card.append(summary);
    }
    card.append(element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows)));
    section.append(card);
  }
}

function renderResults(played) {
  $("#results-section").hidden = false;
  $("#results caption").textContent = played.summary;
  $("#results thead").replaceChildren(
    element("tr", {}, ...played.headers.map((name) => element("th", { text: name }))));
  $("#results tbody").replaceChildren(...played.results.map((result) => {
    const cells = result.cells.map((cell) => element("td", { class: "cell", text: cell }));
    cells[cells.length - 1].className = `cell ${result.passed ? "ok" : "bad"}`;
    return element("tr", { "data-query": result.name }, ...cells);
  }));
}

async function open(path) {
  await busy(`reading ${path}…`, async () => {
    notebook = await call("GET", `apinode/api/endpoints?${new URLSearchParams({ path })}`);
    loads = {};
    renderServices();
    const count = notebook.services.reduce((total, service) => total + service.endpoints.length, 0);
    say(`${path}: ${notebook.services.length} service(s), ${count} endpoint(s)`);
    const url = new URL(location.href);
    url.searchParams.delete("token"); // keep the login token out of the address bar and history
    url.searchParams.set("path", path);
    history.replaceState(null, "", url);
  });
}

async function deploy() {
  await busy("deploying to the dev server…", async () => {
    const deployed = await call("POST", "apinode/api/dev/deploy", { path: notebook.path });
    for (const service of deployed.services) loads[service.service] = service;
    renderServices();
    const failed = deployed.services.filter((service) => !service.switched);
    say(failed.length ? failed.map((service) => service.summary).join("\n")
                      : `deployed to the dev server at ${deployed.devServer}`, failed.length ? "error" : "");
  });
}

// A generator's items, listed as the dev server streams them (the results table follows).
function showItem({ query, item }) {
  $("#items-section").hidden = false;
  const list = $("#items");
  if (list.dataset.query !== query) {
    list.dataset.query = query;
    list.replaceChildren();
    $("#items-query").textContent = query;
  }
  list.append(element("li", { class: "item", text: JSON.stringify(item) }));
}

async function play(service, endpoint) {
  await busy(`playing the test queries of ${service}/${endpoint} on the dev server…`, async () => {
    $("#items-section").hidden = true;
    delete $("#items").dataset.query;
    let played = null;
    await callStreamed("apinode/api/dev/play", { path: notebook.path, service, endpoint }, (name, data) => {
      if (name === "item") showItem(data);
      else if (name === "played") played = data;
      else if (name === "error") throw new Error(data.message);
    });
    if (!played) throw new Error("the play ended without its results");
    renderResults(played);
    say(played.summary, played.passed ? "" : "error");
  });
}

$("#open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  open($("#path").value.trim());
});
$("#deploy").addEventListener("click", deploy);
const initial = new URLSearchParams(location.search).get("path");
if (initial) {
  $("#path").value = initial;
  open(initial);
}
