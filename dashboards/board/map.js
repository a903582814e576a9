// The board's map: stations, carers coloured by state, open calls, a legend of what each
// mark means, and the selected call's route from the household to the carers sent. Leaflet
// and Leaflet.markercluster come from dashboards/node_modules (served as
// /static/vendor/leaflet/ and /static/vendor/leaflet.markercluster/) as the global `L`:
// zoomed out, nearby calls gather into one numbered circle (red while it holds an alarm
// nobody has taken), so a district-wide view never collapses into one blob.
//
// Tiles are optional. With no tile URL (the default: the desk may have no internet) the
// map is offline: no tile layer, a plain background and a latitude/longitude grid, and
// every marker is still placed where it belongs.

// Grid spacings in degrees, finest first; the first giving at most ~8 lines is used.
const GRID_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];

// Leaflet puts tooltip strings and divIcon html into the page as HTML.
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// Tiles: this browser's own choice (localStorage "board.tiles"), else the server's
// [web] map_tiles_url (GET /api/me), else the page's meta tag; none means offline.
export function tileSettings(server = {}) {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content?.trim() || "";
  let url = "";
  try {
    url = localStorage.getItem("board.tiles") || "";
  } catch {
    url = "";
  }
  return {
    url: url || server.tiles_url || meta("board-tiles"),
    attribution: server.attribution || meta("board-tiles-attribution"),
  };
}

function readSetting(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeSetting(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    /* this page only */
  }
}

// A call's mark: an alarm nobody has taken (red, pulsing), an alarm someone owns (orange),
// any other call (a grey-blue diamond: a service request, a device fault).
function callKind(call, isAlarm, isAlarmType) {
  if (isAlarm(call)) return "alarm";
  return isAlarmType(call) ? "owned" : "other";
}

// The carers of a call still on it (sent and not yet stood down, declined or gone quiet):
// those the route is drawn to.
const ON_THE_CALL = new Set(["dispatched", "accepted", "on_the_way", "on_scene"]);

// Zoomed in this far, every call has its own mark again.
const CLUSTER_UNTIL_ZOOM = 16;

export class BoardMap {
  constructor(element, { onSelectCall, label, tiles = {} }) {
    this.element = element;
    this.onSelectCall = onSelectCall;
    this.label = label;
    this.fitted = false;
    this.map = null;
    // Call id -> {marker, key}: a mark is made again only when what it shows changed.
    this.callMarkers = new Map();
    if (typeof L === "undefined") {
      element.textContent = "Leaflet did not load (run scripts/dev setup: npm ci --prefix dashboards)";
      return;
    }
    // maxZoom: clustering needs one, and offline there is no tile layer to give it.
    this.map = L.map(element, { zoomControl: false, attributionControl: true, preferCanvas: false, maxZoom: 19 });
    // The zoom buttons bottom right, above the attribution: the legend has the top.
    L.control.zoom({ position: "bottomright" }).addTo(this.map);
    const chosen = tileSettings(tiles);
    this.offline = !chosen.url;
    element.dataset.mode = this.offline ? "offline" : "tiles";
    if (this.offline) {
      this.gridLayer = L.layerGroup().addTo(this.map);
      this.map.on("moveend zoomend", () => this.drawGrid());
    } else {
      const layer = L.tileLayer(chosen.url, { maxZoom: 19, attribution: chosen.attribution });
      // Tiles that do not load leave positions on a plain background: say so.
      layer.on("tileerror", () => {
        if (!this.tilesFailing) {
          this.tilesFailing = true;
          element.dataset.tiles = "failing";
          element.dispatchEvent(new CustomEvent("tiles-failing"));
        }
      });
      layer.addTo(this.map);
    }
    this.stationLayer = L.layerGroup().addTo(this.map);
    this.routeLayer = L.layerGroup().addTo(this.map);
    this.carerLayer = L.layerGroup().addTo(this.map);
    // Without the clustering package (not installed) calls are simply not grouped.
    this.clustered = typeof L.markerClusterGroup === "function";
    element.dataset.clustering = this.clustered ? "on" : "off";
    this.callLayer = this.clustered
      ? L.markerClusterGroup({
          maxClusterRadius: 45,
          disableClusteringAtZoom: CLUSTER_UNTIL_ZOOM,
          showCoverageOnHover: false,
          spiderfyOnMaxZoom: false,
          zoomToBoundsOnClick: true,
          iconCreateFunction: (cluster) => this.clusterIcon(cluster),
        })
      : L.layerGroup();
    this.callLayer.addTo(this.map);
    this.legend = this.makeLegend();
    this.legend.addTo(this.map);
    // The zoom level, on the element for whoever checks the map (clusters or marks).
    this.map.on("zoomend", () => {
      element.dataset.zoom = String(this.map.getZoom());
    });
    this.map.setView([36.62, 101.77], 12);
  }

  clusterIcon(cluster) {
    const kinds = cluster.getAllChildMarkers().map((marker) => marker.options.callKind);
    const kind = kinds.includes("alarm") ? "alarm" : kinds.includes("owned") ? "owned" : "other";
    const count = cluster.getChildCount();
    return L.divIcon({
      className: `call-cluster call-cluster-${kind}`,
      html: `<span>${count}</span>`,
      iconSize: [38, 38],
    });
  }

  // The legend: every kind of mark on the map and what it means, in the board's language.
  makeLegend() {
    const control = L.control({ position: "topright" });
    control.onAdd = () => {
      const box = L.DomUtil.create("details", "map-legend");
      // Open until someone closes it; this browser remembers (localStorage "board.legend").
      box.open = readSetting("board.legend") !== "closed";
      // Only a closed legend is kept (open is the default; the first toggle event is the
      // page opening it).
      box.addEventListener("toggle", () => writeSetting("board.legend", box.open ? null : "closed"));
      box.id = "map-legend";
      L.DomEvent.disableClickPropagation(box);
      L.DomEvent.disableScrollPropagation(box);
      this.legendBox = box;
      this.drawLegend();
      return box;
    };
    return control;
  }

  drawLegend() {
    const box = this.legendBox;
    if (!box) return;
    // Swatches have classes of their own (legend-*), so counting the map's marks never
    // counts the legend.
    const item = (kind, swatches) => {
      const text = this.label(`map.legend.${kind}`);
      const row = document.createElement("li");
      row.dataset.kind = kind;
      row.title = this.label(`map.legend.${kind}.hint`);
      const swatch = document.createElement("span");
      swatch.className = "legend-swatch";
      for (const [name, inside] of swatches) {
        const mark = document.createElement("span");
        mark.className = name;
        if (inside) mark.textContent = inside;
        swatch.append(mark);
      }
      const words = document.createElement("span");
      words.textContent = text;
      row.append(swatch, words);
      return row;
    };
    const summary = document.createElement("summary");
    summary.textContent = this.label("map.legend");
    const list = document.createElement("ul");
    list.append(
      item("alarm", [["legend-call legend-alarm"]]),
      item("owned", [["legend-call legend-owned"]]),
      item("other", [["legend-call legend-other"]]),
      item("cluster", [["legend-cluster", "5"]]),
      item("carer_free", [["legend-carer carer-free"]]),
      item(
        "carer_busy",
        ["dispatched", "on_the_way", "on_scene"].map((s) => [`legend-carer carer-${s}`]),
      ),
      item("station", [["legend-station", "S01"]]),
      item("route", [["legend-route"]]),
    );
    box.replaceChildren(summary, list);
  }

  drawGrid() {
    if (!this.map || !this.gridLayer) return;
    this.gridLayer.clearLayers();
    const bounds = this.map.getBounds();
    const south = bounds.getSouth();
    const north = bounds.getNorth();
    const west = bounds.getWest();
    const east = bounds.getEast();
    const span = Math.max(north - south, east - west);
    const step = GRID_STEPS.find((s) => span / s <= 8) ?? 10;
    const line = { color: "#9aa9b7", weight: 1, opacity: 0.8, interactive: false };
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      this.gridLayer.addLayer(L.polyline([[lat, west], [lat, east]], line));
      this.gridLayer.addLayer(this.gridLabel([lat, west], `${lat.toFixed(digits)}°N`));
    }
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      this.gridLayer.addLayer(L.polyline([[south, lon], [north, lon]], line));
      this.gridLayer.addLayer(this.gridLabel([south, lon], `${lon.toFixed(digits)}°E`));
    }
  }

  gridLabel(at, text) {
    return L.marker(at, {
      interactive: false,
      keyboard: false,
      icon: L.divIcon({ className: "grid-label", html: text, iconSize: null, iconAnchor: [-2, 14] }),
    });
  }

  // state: {calls, carers, stations, isAlarm, isAlarmType, selected (a call id or null)}
  update(state) {
    if (!this.map) return;
    const isAlarmType = state.isAlarmType ?? (() => false);
    this.drawLegend();
    this.stationLayer.clearLayers();
    this.carerLayer.clearLayers();
    const points = [];
    for (const station of state.stations) {
      if (!station.position) continue;
      const at = [station.position.lat, station.position.lon];
      points.push(at);
      L.marker(at, {
        title: `${station.code} ${station.name}`,
        icon: L.divIcon({
          className: "station-icon",
          html: escapeHtml(station.code),
          iconSize: [34, 20],
          iconAnchor: [17, 10],
        }),
      })
        .bindTooltip(escapeHtml(`${this.label("map.station")} ${station.code} ${station.name}`))
        .addTo(this.stationLayer);
    }
    // Carers often stand at the same spot (their station): spread them on a small ring
    // around it, in screen pixels, so each one can be seen and hovered.
    const atSpot = new Map();
    for (const carer of state.carers) {
      if (!carer.position || carer.state === "off_shift") continue;
      const spot = `${carer.position.lat.toFixed(5)},${carer.position.lon.toFixed(5)}`;
      const index = atSpot.get(spot) ?? 0;
      atSpot.set(spot, index + 1);
      const angle = (index * 2 * Math.PI) / 8 + Math.PI / 8;
      const ring = 22 + 10 * Math.floor(index / 8);
      const dx = Math.round(Math.cos(angle) * ring);
      const dy = Math.round(Math.sin(angle) * ring);
      L.marker([carer.position.lat, carer.position.lon], {
        keyboard: false,
        icon: L.divIcon({
          className: `carer-dot carer-${carer.state}`,
          html: "<span></span>", // coloured by its state's class (board.css)
          iconSize: [14, 14],
          iconAnchor: [7 - dx, 7 - dy],
        }),
      })
        .bindTooltip(escapeHtml(`${carer.code} ${carer.name} · ${this.label(`carer.${carer.state}`)}`))
        .addTo(this.carerLayer);
    }
    this.updateCalls(state, isAlarmType, points);
    this.drawRoute(state);
    if (!this.fitted && points.length > 0) {
      this.map.fitBounds(L.latLngBounds(points).pad(0.15));
      this.fitted = true;
    }
    if (this.offline) this.drawGrid();
  }

  // The calls' marks, made again only where a call's mark changed (a redraw of every mark
  // would close what a person has open on the map and cost a storm's worth of work).
  updateCalls(state, isAlarmType, points) {
    const seen = new Set();
    const added = [];
    const removed = [];
    for (const call of state.calls) {
      const position = call.household?.position;
      if (!position) continue;
      const at = [position.lat, position.lon];
      points.push(at);
      seen.add(call.id);
      const kind = callKind(call, state.isAlarm, isAlarmType);
      const selected = call.id === state.selected;
      const tip = `${this.label("map.call")} ${call.id} · ${this.label(`map.legend.${kind}`)} · ${call.household.code} ${call.household.residents ?? ""}`;
      const key = `${kind}|${at.join(",")}|${selected}|${tip}`;
      const held = this.callMarkers.get(call.id);
      if (held?.key === key) continue;
      if (held) removed.push(held.marker);
      const classes = ["call-icon", kind, selected ? "selected" : ""].filter(Boolean);
      const marker = L.marker(at, {
        title: `${this.label("map.call")} ${call.id}`,
        zIndexOffset: kind === "alarm" ? 2000 : 1000,
        callKind: kind,
        callId: call.id,
        icon: L.divIcon({ className: classes.join(" "), iconSize: [20, 20], iconAnchor: [10, 10] }),
      })
        .bindTooltip(escapeHtml(tip))
        .on("click", () => this.onSelectCall(call.id));
      this.callMarkers.set(call.id, { marker, key });
      added.push(marker);
    }
    for (const [id, held] of this.callMarkers) {
      if (seen.has(id)) continue;
      removed.push(held.marker);
      this.callMarkers.delete(id);
    }
    if (this.clustered) {
      if (removed.length) this.callLayer.removeLayers(removed);
      if (added.length) this.callLayer.addLayers(added);
    } else {
      for (const marker of removed) this.callLayer.removeLayer(marker);
      for (const marker of added) this.callLayer.addLayer(marker);
    }
  }

  // The selected call's route: a line from the household to each carer on the call, at
  // the carer's last known position, with the carer named at its end.
  drawRoute(state) {
    this.routeLayer.clearLayers();
    const call = state.calls.find((c) => c.id === state.selected);
    const home = call?.household?.position;
    this.element.dataset.routes = "0";
    if (!call || !home) return;
    const from = [home.lat, home.lon];
    let drawn = 0;
    for (const sent of call.carers ?? []) {
      if (!ON_THE_CALL.has(sent.state)) continue;
      const carer = state.carers.find((c) => c.code === sent.code);
      if (!carer?.position) continue;
      const to = [carer.position.lat, carer.position.lon];
      const minutes = typeof sent.travel_min === "number" ? ` · ${this.label("map.route_min", { min: Math.round(sent.travel_min) })}` : "";
      const words = `${sent.code} ${carer.name ?? ""} · ${this.label(`carer.${sent.state}`)}${minutes}`;
      L.polyline([from, to], {
        className: `route-line route-${sent.state}`,
        weight: 4,
        dashArray: "8 6",
        interactive: true,
      })
        .bindTooltip(escapeHtml(words), { sticky: true })
        .addTo(this.routeLayer);
      L.marker(to, {
        interactive: false,
        keyboard: false,
        zIndexOffset: 3000,
        // Carers sent from one station stand at one spot: their names one under another.
        icon: L.divIcon({ className: "route-end", html: escapeHtml(sent.code), iconSize: null, iconAnchor: [-8, 24 - 18 * drawn] }),
      }).addTo(this.routeLayer);
      drawn += 1;
    }
    this.element.dataset.routes = String(drawn);
  }

  invalidate() {
    this.map?.invalidateSize();
  }
}
