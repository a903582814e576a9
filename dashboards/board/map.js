// The board's map: stations, carers coloured by state, open calls. Leaflet comes from
// dashboards/node_modules (served as /static/vendor/leaflet/) as the global `L`.
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

export class BoardMap {
  constructor(element, { onSelectCall, label, tiles = {} }) {
    this.element = element;
    this.onSelectCall = onSelectCall;
    this.label = label;
    this.fitted = false;
    this.map = null;
    if (typeof L === "undefined") {
      element.textContent = "Leaflet did not load (run scripts/dev setup: npm ci --prefix dashboards)";
      return;
    }
    this.map = L.map(element, { zoomControl: true, attributionControl: true, preferCanvas: false });
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
    this.carerLayer = L.layerGroup().addTo(this.map);
    this.callLayer = L.layerGroup().addTo(this.map);
    this.map.setView([36.62, 101.77], 12);
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

  update(state) {
    if (!this.map) return;
    this.stationLayer.clearLayers();
    this.carerLayer.clearLayers();
    this.callLayer.clearLayers();
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
    for (const call of state.calls) {
      const position = call.household?.position;
      if (!position) continue;
      const at = [position.lat, position.lon];
      points.push(at);
      const classes = ["call-icon", state.isAlarm(call) ? "alarm" : "calm"];
      L.marker(at, {
        title: `${this.label("map.call")} ${call.id}`,
        zIndexOffset: 1000,
        icon: L.divIcon({ className: classes.join(" "), iconSize: [20, 20], iconAnchor: [10, 10] }),
      })
        .bindTooltip(escapeHtml(`${this.label("map.call")} ${call.id} · ${call.household.code} ${call.household.residents ?? ""}`))
        .on("click", () => this.onSelectCall(call.id))
        .addTo(this.callLayer);
    }
    if (!this.fitted && points.length > 0) {
      this.map.fitBounds(L.latLngBounds(points).pad(0.15));
      this.fitted = true;
    }
    if (this.offline) this.drawGrid();
  }

  invalidate() {
    this.map?.invalidateSize();
  }
}
