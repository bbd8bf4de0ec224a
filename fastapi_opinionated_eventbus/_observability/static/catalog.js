// The event catalog's live page. It reads the introspection endpoint (this page's URL
// without "/ui") every few seconds and rebuilds the tables. Every value from the server is
// user data (event names above all): it reaches the page only as text nodes and
// properties, never as HTML.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const endpoint = window.location.pathname.replace(/\/ui\/?$/, "") || "/";
  const openPayloads = new Set();
  const COUNTS = ["emitted", "handled", "failed", "retried", "dead_lettered", "in_flight"];
  const HANDLER_COUNTS = COUNTS.slice(1);

  // h("td", {className: "num"}, "3", child): an element, its properties, its children.
  // Strings become text nodes; nothing is ever parsed as HTML.
  function h(tag, props, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") {
        Object.assign(element.dataset, value);
      } else {
        element[key] = value;
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function counterCells(counts, keys) {
    return keys.map((key) => {
      const value = counts ? counts[key] || 0 : null;
      const classes = ["num", "c-" + key];
      if (value && (key === "failed" || key === "dead_lettered")) classes.push("bad");
      return h("td", { className: classes.join(" ") }, value === null ? "\u2014" : value);
    });
  }

  function badge(label, kind) {
    return h("span", { className: "badge " + (kind || "") }, label);
  }

  function describeRetry(retry) {
    return retry ? retry.max_attempts + " attempts" : null;
  }

  function handlerOptions(handler) {
    const options = ["priority " + handler.priority];
    const retry = describeRetry(handler.retry);
    if (retry) options.push("retry " + retry);
    if (handler.timeout !== null) options.push("timeout " + handler.timeout + "s");
    if (handler.broadcast) options.push("broadcast");
    return options.join(", ");
  }

  function shortName(handler) {
    // "app.domains.user.handlers:send_welcome" -> "send_welcome" (the full name on hover)
    const qualname = handler.split(":").pop();
    return h("code", { title: handler }, qualname);
  }

  function path(text) {
    // A file path that may break after each "/" (a <wbr> element, not parsed markup).
    const parts = text.split("/");
    return h("code", {}, parts.map((part, i) => (i ? [h("wbr"), "/" + part] : part)));
  }

  function fullName(handler) {
    // The qualified name, its module below it: narrower than "module:qualname".
    const cut = handler.lastIndexOf(":");
    return [
      h("code", { title: handler }, handler.slice(cut + 1)),
      h("div", { className: "muted small" }, handler.slice(0, Math.max(cut, 0))),
    ];
  }

  // ------------------------------------------------------------------ sections
  function renderHeader(report) {
    const app = report.app || {};
    const catalog = report.catalog || { events: [] };
    const health = report.health || {};
    const handlers = catalog.events.reduce((n, event) => n + event.handlers.length, 0);
    document.title = "Event catalog \u00b7 " + (app.title || "");
    byId("title").textContent = app.title || "Event catalog";
    byId("subtitle").replaceChildren(
      "Event catalog \u00b7 version " + (app.version || "?") + " \u00b7 " +
        catalog.events.length + " event name(s) or pattern(s), " + handlers + " handler(s) \u00b7 ",
      report.asyncapi_path
        ? h("a", { href: documentLink(report) }, "AsyncAPI document")
        : "no AsyncAPI document (asyncapi_path is off)",
    );
    const healthy = health.healthy !== false && health.reachable !== false;
    const pill = byId("health");
    pill.className = "pill " + (healthy ? "ok" : "bad");
    pill.textContent = (health.backend || "backend") + ": " +
      (healthy ? "healthy" : "unhealthy") + (health.state ? " (" + health.state + ")" : "");
  }

  function documentLink(report) {
    // The document is mounted beside the introspection endpoint, under the same root path
    // (an app behind a proxy may be served under a prefix).
    const own = report.introspection_path || "";
    const root = own && endpoint.endsWith(own) ? endpoint.slice(0, -own.length) : "";
    return root + report.asyncapi_path;
  }

  function renderTotals(report) {
    const counters = report.counters || {};
    const health = report.health || {};
    const cards = [
      ["Emitted", counters.emitted],
      ["Handled", counters.handled],
      ["Failed", counters.failed],
      ["Retried", counters.retried],
      ["Dead-lettered", counters.dead_lettered],
      ["Handlers running", counters.in_flight],
      ["Background events in flight", report.in_flight],
      ["Lost at shutdown", report.lost_events],
      ["Dead letters stored", health.dead_letters],
    ];
    byId("totals").replaceChildren(
      ...cards.map(([label, value]) =>
        h("div", { className: "card", dataset: { counter: label } },
          h("div", { className: "value" }, value === undefined || value === null ? "\u2014" : value),
          h("div", { className: "label" }, label))),
    );
  }

  function payloadCell(event) {
    let summary;
    if (event.schema) summary = "typed " + event.schema.split(":").pop();
    else if (Object.keys(event.payload).length) summary = "from annotations";
    else return h("td", { className: "muted" }, "not described");
    const details = h("details", { open: openPayloads.has(event.name) },
      h("summary", {}, summary),
      h("pre", {}, JSON.stringify(event.payload, null, 2)));
    details.addEventListener("toggle", () => {
      if (details.open) openPayloads.add(event.name);
      else openPayloads.delete(event.name);
    });
    return h("td", { title: event.schema || "" }, details);
  }

  function renderEvents(report) {
    const catalog = report.catalog || { events: [], scan: null };
    const byName = (report.counters || {}).events || {};
    const overflow = ((report.counters || {}).limits || {}).overflow;
    const rows = catalog.events.map((event) => {
      const name = h("td", {},
        h("code", { className: "event-name" }, event.name),
        event.pattern ? badge("pattern") : null,
        event.also_handled_by.length
          ? h("div", { className: "muted small" }, "also: " + event.also_handled_by.join(", "))
          : null);
      const handlers = h("td", {},
        event.handlers.length
          ? event.handlers.map((handler) => h("div", {}, shortName(handler.handler)))
          : h("span", { className: "muted" }, "none"));
      let sites;
      if (catalog.scan === null) sites = h("span", { className: "muted" }, "not scanned");
      else if (event.pattern) sites = h("span", { className: "muted" }, "\u2014");
      else if (!event.emit_sites.length) sites = h("span", { className: "muted" }, "no literal emit");
      else sites = event.emit_sites.map((site) => h("div", {}, path(site)));
      // A pattern is not an emitted name: its handlers' counts are in the handlers table.
      const counts = event.pattern ? null : byName[event.name] || {};
      return h("tr", { dataset: { event: event.name } },
        name, payloadCell(event), handlers, h("td", {}, sites), counterCells(counts, COUNTS));
    });
    const known = new Set(catalog.events.map((event) => event.name));
    for (const [name, counts] of Object.entries(byName)) {
      if (known.has(name)) continue;
      const label = name === overflow
        ? h("td", {}, h("span", { className: "muted" }, "other event names (beyond the limit)"))
        : h("td", {}, h("code", { className: "event-name" }, name), badge("emitted at run time"));
      rows.push(h("tr", { dataset: { event: name } },
        label, h("td", {}), h("td", {}), h("td", {}), counterCells(counts, COUNTS)));
    }
    byId("events").tBodies[0].replaceChildren(...rows);
    const scan = catalog.scan;
    byId("events-note").textContent = scan === null
      ? ""
      : "Emit sites from a static scan of " + scan.files + " file(s)" +
        (scan.truncated ? " (stopped at the file limit)" : "") +
        (scan.computed_names ? "; " + scan.computed_names + " emit(s) with computed names not shown" : "") + ".";
  }

  function renderHandlers(report) {
    const catalog = report.catalog || { events: [] };
    const counts = new Map();
    for (const row of (report.counters || {}).handlers || []) {
      counts.set(row.subscription + "\u0000" + row.handler, row);
    }
    const rows = [];
    for (const event of catalog.events) {
      for (const handler of event.handlers) {
        rows.push(h("tr", { dataset: { handler: handler.handler, subscription: handler.subscription } },
          h("td", {}, fullName(handler.handler)),
          h("td", {}, h("code", { className: "event-name" }, handler.subscription)),
          h("td", {}, handler.async ? "async" : "sync (thread)"),
          h("td", { className: "options" }, handlerOptions(handler)),
          h("td", {}, handler.location ? path(handler.location) : "?"),
          counterCells(counts.get(handler.subscription + "\u0000" + handler.handler) || {}, HANDLER_COUNTS)));
      }
    }
    byId("handlers").tBodies[0].replaceChildren(...rows);
  }

  function renderFailures(report) {
    const failures = report.recent_failures || [];
    const rows = failures.map((failure) => {
      const at = new Date(failure.at * 1000);
      return h("tr", { dataset: { eventId: failure.event_id } },
        h("td", { title: at.toISOString() }, at.toLocaleTimeString()),
        h("td", {}, h("code", { className: "event-name" }, failure.event)),
        h("td", {}, h("code", {}, failure.event_id)),
        h("td", {}, h("code", {}, failure.correlation_id)),
        h("td", {}, shortName(failure.handler)),
        h("td", { className: "bad" }, failure.exception_type),
        h("td", {}, failure.attempt + (failure.final ? " (dead letter)" : " (retried)")));
    });
    if (!rows.length) {
      rows.push(h("tr", {}, h("td", { colSpan: 7, className: "muted" }, "No failures recorded.")));
    }
    byId("failures").tBodies[0].replaceChildren(...rows);
  }

  function renderBackend(report) {
    const facts = [];
    const add = (term, value) => facts.push(h("dt", {}, term), h("dd", {}, value));
    for (const [key, value] of Object.entries(report.health || {})) {
      add(key, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value));
    }
    for (const server of (report.catalog || {}).servers || []) {
      add("server " + server.name, server.protocol + "://" + server.host + (server.pathname || ""));
    }
    byId("backend").replaceChildren(...facts);
  }

  // ------------------------------------------------------------------ refreshing
  function render(report) {
    renderHeader(report);
    renderTotals(report);
    renderEvents(report);
    renderHandlers(report);
    renderFailures(report);
    renderBackend(report);
  }

  function setStatus(message, failed) {
    const status = byId("refreshed");
    status.textContent = message;
    status.className = failed ? "bad" : "muted";
  }

  async function refresh() {
    try {
      const response = await fetch(endpoint, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      document.body.dataset.refreshed = String(Date.now());
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      setStatus("refresh failed: " + error.message + " (retrying)", true);
    } finally {
      window.setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
})();
