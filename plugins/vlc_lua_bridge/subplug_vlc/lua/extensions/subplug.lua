-- subplug for VLC: "Generate EN/MN subtitles" for the playing file, offline.
--
-- subplug-version: __SUBPLUG_VERSION__
--
-- Installed by `subplug install vlc`; appears in VLC's View menu (Qt interface) as
-- "Generate EN/MN subtitles" (VLC 3 shows the short description). VLC activates an
-- extension on the first click of that entry, so activating it generates subtitles
-- at once; while it is active the entry is a submenu (Generate EN/MN subtitles,
-- Settings…, Deactivate). All the work
-- happens in the subplug_bridge module, which the headless interface script
-- (subplug_intf.lua) shares.

local bridge = require("subplug_bridge")

local dialog = nil
local widgets = {}
local pending = nil

function descriptor()
    return {
        title = "subplug: EN/MN subtitles",
        version = "__SUBPLUG_VERSION__",
        author = "subplug",
        url = "https://pypi.org/project/subplug/",
        shortdesc = "Generate EN/MN subtitles",
        description = "Generates bilingual English/Mongolian subtitles for the playing "
            .. "file with subplug (offline, Gemma 3n) and shows them.",
        capabilities = { "menu" },
    }
end

function activate()
    -- The first click on "Generate EN/MN subtitles" in the View menu: generate.
    generate()
end

function deactivate()
    close_dialog()
end

-- VLC calls this for every active extension whenever the playing item's metadata
-- changes (every few seconds for some files); without it, it logs
-- "meta_changed() not found" each time.
function meta_changed() end

function close()
    close_dialog()
    vlc.deactivate()
end

function menu()
    return { "Generate EN/MN subtitles", "Settings…" }
end

function trigger_menu(id)
    if id == 1 then
        generate()
    elseif id == 2 then
        show_settings()
    end
end

-- ------------------------------------------------------------------- helpers

local function html(text)
    return (tostring(text or ""):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

function close_dialog()
    if dialog then
        dialog:delete()
    end
    dialog, widgets, pending = nil, {}, nil
end

local function new_dialog(title)
    close_dialog()
    dialog = vlc.dialog(title)
    return dialog
end

--- Text for a label: escaped and cut into short lines (VLC's labels do not wrap).
local function wrapped(text)
    local lines = {}
    for i, line in ipairs(bridge.wrap(text, 60)) do
        lines[i] = html(line)
    end
    return table.concat(lines, "<br>")
end

local function show_message(title, message, hint)
    local d = new_dialog(title)
    d:add_label(wrapped(message), 1, 1, 4, 1)
    if hint and hint ~= "" then
        d:add_label("<i>" .. wrapped(hint) .. "</i>", 1, 2, 4, 1)
    end
    d:add_button("Settings…", function() show_settings() end, 3, 3, 1, 1)
    d:add_button("Close", close_dialog, 4, 3, 1, 1)
    d:show()
end

-- ---------------------------------------------------------------- generating

local function run(overwrite, use_existing)
    local media = pending
    local settings = bridge.load_settings()
    local d = new_dialog("Generate EN/MN subtitles")
    widgets.file = d:add_label("<b>" .. wrapped(bridge.basename(media)) .. "</b>", 1, 1, 4, 1)
    widgets.status = d:add_label("Starting subplug…", 1, 2, 4, 1)
    widgets.bar = d:add_label(bridge.progress_bar(0), 1, 3, 4, 1)
    widgets.stop = d:add_check_box("Stop", false, 1, 4, 1, 1)
    d:add_label("<i>Tick Stop to cancel; finished parts are kept.</i>", 2, 4, 3, 1)
    d:show()

    local ui = {
        tick = function()
            if vlc.keep_alive then
                vlc.keep_alive()
            end
        end,
        should_stop = function()
            return widgets.stop and widgets.stop:get_checked()
        end,
        update = function(state, text)
            widgets.status:set_text(html(text))
            widgets.bar:set_text(bridge.progress_bar(state.percent or 0))
            d:update()
        end,
    }
    local result = bridge.generate_for_current(ui, {
        settings = settings, media = media, overwrite = overwrite, use_existing = use_existing,
    })
    if result.ok then
        local where = result.fallback and ("<br>" .. wrapped("Saved in " .. result.out_dir
            .. " (the media's folder is read-only).")) or ""
        show_message_html("Subtitles ready", wrapped("The subtitles are on: "
            .. bridge.basename(result.subtitle)) .. where, result.warnings)
    elseif result.cancelled then
        show_message("Stopped", result.message)
    else
        show_message("subplug could not make subtitles", result.message, result.hint)
    end
end

function show_message_html(title, body, warnings)
    local d = new_dialog(title)
    d:add_label(body, 1, 1, 4, 1)
    local row = 2
    for _, w in ipairs(warnings or {}) do
        d:add_label("<i>" .. wrapped(w) .. "</i>", 1, row, 4, 1)
        row = row + 1
    end
    d:add_button("Close", close_dialog, 4, row, 1, 1)
    d:show()
end

function generate()
    local media, why = bridge.current_media()
    if not media then
        show_message("Generate EN/MN subtitles", why)
        return
    end
    pending = media
    local settings = bridge.load_settings()
    local out_dir = bridge.output_dir(media)
    local existing = bridge.expected_ass(media, out_dir, settings)
    if bridge.exists(existing) then
        local d = new_dialog("Generate EN/MN subtitles")
        pending = media
        d:add_label("Subtitles for this file already exist:<br>" .. wrapped(existing), 1, 1, 4, 1)
        d:add_button("Show them", function() run(false, true) end, 2, 2, 1, 1)
        d:add_button("Generate again", function() run(true, false) end, 3, 2, 1, 1)
        d:add_button("Cancel", close_dialog, 4, 2, 1, 1)
        d:show()
        return
    end
    run(false, false)
end

-- ------------------------------------------------------------------ settings

local LABELS = {
    source = { auto = "Detect", en = "English", mn = "Mongolian" },
    formats = { ["ass,srt"] = ".ass + .srt", ass = ".ass only", ["ass,srt,vtt"] = ".ass + .srt + .vtt" },
    targets = { ["en,mn"] = "English + Mongolian", en = "English only", mn = "Mongolian only" },
    bottom = { mn = "Mongolian at the bottom", en = "English at the bottom" },
    device = { auto = "Automatic", cpu = "CPU", cuda = "NVIDIA GPU (CUDA)" },
}

local function dropdown(d, key, current, row, title)
    d:add_label(title, 1, row, 1, 1)
    local dd = d:add_dropdown(2, row, 3, 1)
    local choices = bridge.SETTING_CHOICES[key]
    -- The first value added is the one shown: put the current setting first.
    local order = { current }
    for _, c in ipairs(choices) do
        if c ~= current then
            order[#order + 1] = c
        end
    end
    for i, c in ipairs(order) do
        dd:add_value(LABELS[key][c] or c, i)
    end
    widgets[key] = { widget = dd, order = order }
end

function show_settings()
    local settings = bridge.load_settings()
    local cfg = bridge.load_config()
    local d = new_dialog("subplug settings")
    dropdown(d, "source", settings.source, 1, "Spoken language")
    dropdown(d, "targets", settings.targets, 2, "Subtitles in")
    dropdown(d, "formats", settings.formats, 3, "Files")
    dropdown(d, "bottom", settings.bottom, 4, "Layout")
    dropdown(d, "device", settings.device, 5, "Run on")
    d:add_label("Model (name or folder; empty = default)", 1, 6, 1, 1)
    widgets.model = d:add_text_input(settings.model, 2, 6, 3, 1)
    d:add_label("<small>subplug " .. html(bridge.VERSION) .. " · "
        .. html(table.concat(cfg.command, " ")) .. "</small>", 1, 7, 4, 1)
    d:add_button("Save", save_settings, 3, 8, 1, 1)
    d:add_button("Cancel", close_dialog, 4, 8, 1, 1)
    d:show()
end

function save_settings()
    local settings = bridge.load_settings()
    for _, key in ipairs({ "source", "targets", "formats", "bottom", "device" }) do
        local entry = widgets[key]
        local index = entry and entry.widget:get_value()
        if index and entry.order[index] then
            settings[key] = entry.order[index]
        end
    end
    if widgets.model then
        settings.model = bridge.trim(widgets.model:get_text() or "")
    end
    local ok, err = bridge.save_settings(settings)
    if ok then
        close_dialog()
    else
        show_message("subplug settings", "Could not save the settings: " .. tostring(err))
    end
end
