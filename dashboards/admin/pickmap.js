// Where a household is: a small map to click on, tied to its latitude and longitude
// fields. A click sets the fields; typing in the fields moves the mark. Offline (no tile
// URL, the default) it is the board's plain background with a grid and the stations as
// landmarks; there is no address lookup (no geocoding without the internet).
import { tileSettings } from "../board/map.js";

// Grid spacings in degrees, finest first; the first giving at most ~8 lines is used.
const GRID_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];

export class PickMap {
  // element: the map's box; lat, lon: the inputs; stations: [{code, name, lat, lon}].
  constructor(element, { lat, lon, stations = [], tiles = {} }) {
    this.lat = lat;
    this.lon = lon;
    this.mark = null;
    if (typeof L === "undefined") {
      element.textContent = "Leaflet did not load (run scripts/dev setup: npm ci --prefix dashboards)";
      return;
    }
    this.map = L.map(element, { zoomControl: true, attributionControl: true, maxZoom: 19 });
    // The view first: Leaflet draws nothing added to a map without one.
    const first = this.position() ?? (stations.length ? [stations[0].lat, stations[0].lon] : [36.62, 101.77]);
    this.map.setView(first, this.position() ? 16 : 13);
    const chosen = tileSettings(tiles);
    element.dataset.mode = chosen.url ? "tiles" : "offline";
    if (chosen.url) {
      L.tileLayer(chosen.url, { maxZoom: 19, attribution: chosen.attribution }).addTo(this.map);
    } else {
      this.grid = L.layerGroup().addTo(this.map);
      this.map.on("moveend zoomend", () => this.drawGrid());
      this.drawGrid();
    }
    for (const s of stations) {
      L.circleMarker([s.lat, s.lon], { radius: 6, color: "#7cc4ff", weight: 2, fillOpacity: 0.6, className: "station-dot" })
        .bindTooltip(String(`${s.code} ${s.name}`).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`), { direction: "top" })
        .addTo(this.map);
    }
    this.map.on("click", (event) => {
      this.lat.value = event.latlng.lat.toFixed(6);
      this.lon.value = event.latlng.lng.toFixed(6);
      this.lat.dispatchEvent(new Event("input", { bubbles: true }));
      this.place(false);
    });
    for (const input of [lat, lon]) input.addEventListener("input", () => this.place(false));
    this.place(true);
    // The box is laid out after this runs: let Leaflet measure it again.
    setTimeout(() => this.map.invalidateSize(), 0);
  }

  position() {
    const lat = Number.parseFloat(this.lat.value);
    const lon = Number.parseFloat(this.lon.value);
    if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
    return [lat, lon];
  }

  // The mark where the fields say; `centre`: bring it into view.
  place(centre) {
    if (!this.map) return;
    const at = this.position();
    if (!at) {
      this.mark?.remove();
      this.mark = null;
      return;
    }
    if (!this.mark) {
      this.mark = L.circleMarker(at, { radius: 10, color: "#ff4d4d", weight: 3, fillColor: "#ffc857", fillOpacity: 0.9, className: "home-mark" }).addTo(this.map);
    } else {
      this.mark.setLatLng(at);
    }
    if (centre) this.map.setView(at, Math.max(this.map.getZoom(), 16));
  }

  drawGrid() {
    this.grid.clearLayers();
    const bounds = this.map.getBounds();
    const span = Math.max(bounds.getNorth() - bounds.getSouth(), bounds.getEast() - bounds.getWest());
    const step = GRID_STEPS.find((s) => span / s <= 8) ?? 1;
    const line = { color: "#3b4d63", weight: 1, interactive: false };
    for (let lat = Math.floor(bounds.getSouth() / step) * step; lat <= bounds.getNorth(); lat += step) {
      L.polyline([[lat, bounds.getWest()], [lat, bounds.getEast()]], line).addTo(this.grid);
    }
    for (let lon = Math.floor(bounds.getWest() / step) * step; lon <= bounds.getEast(); lon += step) {
      L.polyline([[bounds.getSouth(), lon], [bounds.getNorth(), lon]], line).addTo(this.grid);
    }
  }

  remove() {
    this.map?.remove();
  }
}
