// The Coverage map as a Streamlit component with no build step: Streamlit's component protocol
// spoken by postMessage (componentReady -> render -> setComponentValue / setFrameHeight).
// Args: figure (plotly JSON), thumbnails (data URIs, by row), height (px). Value: the clicked row.
"use strict";
(function () {
  const plot = document.getElementById("plot");
  const tip = document.getElementById("tip");
  const mouse = { x: 0, y: 0 };
  let thumbnails = [];
  let bound = false;

  function send(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  }

  // A photo's row: the customdata of points drawn from a row (areas and the route have none).
  function rowOf(pt) {
    const c = Array.isArray(pt.customdata) ? pt.customdata[0] : pt.customdata;
    return typeof c === "number" ? c : null;
  }

  // plotly's hover markup ("<b>a</b><br>b") as plain lines: parsed inertly, never run as HTML.
  function lines(text) {
    return String(text || "").split(/<br\s*\/?>/i)
      .map((l) => new DOMParser().parseFromString(l, "text/html").body.textContent);
  }

  function place() {  // beside the mouse, inside the frame
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = mouse.x + 16, y = mouse.y + 16;
    if (x + w > window.innerWidth) x = Math.max(0, mouse.x - w - 16);
    if (y + h > window.innerHeight) y = Math.max(0, window.innerHeight - h - 4);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  function show(pt, row) {
    const text = pt.hovertext !== undefined ? pt.hovertext : (pt.data.hovertext || [])[pt.pointIndex];
    tip.replaceChildren();
    if (thumbnails[row]) {
      const img = document.createElement("img");
      img.alt = "";
      img.onload = place;
      img.src = thumbnails[row];
      tip.append(img);
    }
    lines(text).forEach((line, i) => {
      const div = document.createElement("div");
      if (i < 2) div.className = "head";  // the photo's name and the chosen indicator
      div.textContent = line;
      tip.append(div);
    });
    tip.style.display = "block";
    place();
  }

  function hide() { tip.style.display = "none"; }

  function bind() {
    plot.on("plotly_hover", (ev) => {
      const pt = ev.points && ev.points[0];
      const row = pt ? rowOf(pt) : null;
      if (row === null) hide(); else show(pt, row);
    });
    plot.on("plotly_unhover", hide);
    plot.on("plotly_click", (ev) => {
      const row = ev.points && ev.points.length ? rowOf(ev.points[0]) : null;
      if (row !== null) send("streamlit:setComponentValue", { value: row, dataType: "json" });
    });
    document.addEventListener("mousemove", (e) => {
      mouse.x = e.clientX;
      mouse.y = e.clientY;
      if (tip.style.display === "block") place();
    });
    plot.addEventListener("mouseleave", hide);
    bound = true;
  }

  function render(args) {
    thumbnails = args.thumbnails || [];
    const fig = args.figure || { data: [], layout: {} };
    fig.data.forEach((t) => {  // the photos' own tooltip replaces plotly's label
      if (t.customdata != null) { t.hoverinfo = "none"; delete t.hovertemplate; }
    });
    const layout = Object.assign({}, fig.layout, { height: args.height, autosize: true });
    delete layout.width;
    const config = { displaylogo: false, responsive: true, showSendToCloud: false, showLink: false };  // no cloud
    Plotly.react(plot, fig.data, layout, config)
      .then(() => {
        if (!bound) bind();
        send("streamlit:setFrameHeight", { height: Math.ceil(plot.getBoundingClientRect().height) || args.height });
      })
      .catch((err) => console.error("geo_map: plotly could not draw the figure", err));
  }

  window.addEventListener("message", (e) => {
    if (e.source !== window.parent || !e.data || e.data.type !== "streamlit:render") return;
    render(e.data.args || {});
  });
  send("streamlit:componentReady", { apiVersion: 1 });
})();
