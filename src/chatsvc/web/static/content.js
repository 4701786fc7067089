// A message's content on screen: text with its line breaks, images at their size, videos as a
// link (and, for YouTube and Vimeo, a player from their privacy-enhanced hosts on request).
// URLs without an http(s) scheme are shown as text: the original's clients send such references.

import { el, externalLink } from "./dom.js";

export function renderContent(content) {
  switch (content?.type) {
    case "text":
      return el("p", { className: "text" }, content.text);
    case "image":
      return renderImage(content);
    case "video":
      return renderVideo(content);
    default:
      return el("p", { className: "text unknown" }, "(a kind of message this page cannot show)");
  }
}

// One line for the conversation list.
export function previewOf(content) {
  switch (content?.type) {
    case "text": return content.text.replace(/\s+/g, " ").slice(0, 120);
    case "image": return "Image";
    case "video": return "Video";
    default: return "Message";
  }
}

export function webUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url : null;
  } catch {
    return null;
  }
}

function renderImage({ url, width, height }) {
  if (!webUrl(url)) return el("p", { className: "text reference" }, `Image: ${url}`);
  const image = el("img", {
    src: url, width, height, alt: "Image", loading: "lazy", referrerpolicy: "no-referrer",
    decoding: "async",
  });
  return el("figure", { className: "image" }, image,
    el("figcaption", {}, externalLink(url, "Open image")));
}

function renderVideo({ url, source }) {
  if (!webUrl(url)) return el("p", { className: "text reference" }, `Video: ${url}`);
  const player = embedUrl(url);
  const label = source === "vimeo" ? "Vimeo video" : source === "youtube" ? "YouTube video" : "Video";
  const figure = el("figure", { className: "video" }, el("figcaption", {}, externalLink(url, `${label}: ${url}`)));
  if (player) {
    // The player loads only when asked to: opening a conversation tells no video host anything.
    const play = el("button", { type: "button", className: "secondary" }, `Play ${label} here`);
    play.addEventListener("click", () => {
      const frame = el("iframe", {
        src: player, title: label, width: 560, height: 315, allow: "fullscreen; picture-in-picture",
        allowfullscreen: true, referrerpolicy: "strict-origin", loading: "lazy",
        sandbox: "allow-scripts allow-same-origin allow-presentation allow-popups",
      });
      play.replaceWith(frame);
      frame.focus({ preventScroll: true });
    });
    figure.prepend(play);
  }
  return figure;
}

const YOUTUBE_ID = /^[A-Za-z0-9_-]{11}$/;
const YOUTUBE_HOSTS = new Set(["youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com",
  "youtube-nocookie.com", "www.youtube-nocookie.com"]);
const VIMEO_HOSTS = new Set(["vimeo.com", "www.vimeo.com", "player.vimeo.com"]);

// The privacy-enhanced player URL for a YouTube or Vimeo link, else null (shown as a link only).
export function embedUrl(text) {
  const url = webUrl(text);
  if (!url) return null;
  const host = url.hostname.toLowerCase();
  const parts = url.pathname.split("/").filter(Boolean);
  let youtube = null;
  if (host === "youtu.be") youtube = parts[0];
  else if (YOUTUBE_HOSTS.has(host)) {
    youtube = parts[0] === "watch" ? url.searchParams.get("v")
      : ["embed", "shorts", "live", "v"].includes(parts[0]) ? parts[1] : null;
  }
  if (youtube && YOUTUBE_ID.test(youtube)) return `https://www.youtube-nocookie.com/embed/${youtube}`;
  if (VIMEO_HOSTS.has(host)) {
    const id = parts.find((part) => /^\d{1,12}$/.test(part));
    if (id) return `https://player.vimeo.com/video/${id}?dnt=1`;
  }
  return null;
}
