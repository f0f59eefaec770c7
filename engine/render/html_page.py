"""Self-contained HTML pages (pictures as PNG data URIs, no network): the one page shell, figures, and the
click-to-enlarge viewer that the report and the evaluation page share."""
from __future__ import annotations

import base64
import html

import numpy as np

from .pictures import encode_png

BASE_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1em;color:#222}
img{border:1px solid #ccc;cursor:zoom-in}figcaption{font-size:.85em;color:#555}
figure.wide{display:block;max-width:100%;width:100%}figure.wide img{width:100%;image-rendering:pixelated}
#full{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);overflow:auto;cursor:zoom-out;z-index:9}
#full img{max-width:none;border:0;margin:1em auto;display:block;background:#fff;image-rendering:pixelated}"""
WIDE = 2.0  # a figure at least this many times wider than high takes the page's width

# a click on any picture shows it at its full size over the page; a click on that closes it
ZOOM = ("<div id='full'><img id='full-img' alt='full size'></div><script>"
        "document.addEventListener('click',e=>{const f=document.getElementById('full');"
        "if(e.target.closest('#full')){f.style.display='none';return;}"
        "if(e.target.tagName==='IMG'){document.getElementById('full-img').src=e.target.src;f.style.display='block';}});"
        "</script>")


def img_tag(arr: np.ndarray, alt: str) -> str:
    """An <img> holding the picture as a PNG data URI (pages are single self-contained files)."""
    data = base64.b64encode(encode_png(arr)).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(arr, caption: str) -> str:
    kind = " class='wide'" if arr.shape[1] >= WIDE * arr.shape[0] else ""
    return f"<figure{kind}>{img_tag(arr, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def page(title: str, css: str, body: list[str], checks: str = "") -> str:
    """The whole page. For headless checks the body says how many pictures decoded (data-images-loaded="13/13");
    `checks` adds more such JavaScript statements."""
    loaded = ("<script>window.addEventListener('load',()=>{const i=[...document.images].filter(x=>x.id!=='full-img');"
              "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;"
              f"{checks}}});</script>")
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{BASE_CSS}\n{css}</style></head><body><h1>{html.escape(title)}</h1>")
    return "\n".join([head, *body, ZOOM, loaded, "</body></html>"])
