-- subplug headless interface: generate (or reuse) EN/MN subtitles for each file
-- VLC plays and select them, with no dialogs. The same code as the extension.
--
-- subplug-version: __SUBPLUG_VERSION__
--
--   vlc --extraintf luaintf --lua-intf subplug_intf movie.mp4
--
-- Options (--lua-config "subplug_intf={...}"):
--   overwrite=true     generate again even when subtitles exist
--   report='/path'     write the result of each file as JSON lines to this file
--   quit=true          quit VLC after the first file
--   play=true          resume playback once the subtitles are shown (start VLC
--                      with --start-paused to have them from the first frame)
--   stop_after=N       stop the job after N seconds (to try cancelling)

local bridge = require("subplug_bridge")

local options = config or {}
local handled = {}
local started = vlc.misc.mdate()

local function log(text)
    vlc.msg.info("[subplug] " .. text)
end

local function legacy_spu_es()
    local input = vlc.object and vlc.object.input and vlc.object.input()
    if input and not vlc.player then
        return vlc.var.get(input, "spu-es")
    end
    return nil
end

local function report(result)
    local job = result.job
    local plain = {
        ok = result.ok == true,
        media = result.media,
        subtitle = result.subtitle,
        track = result.track,
        tracks = result.tracks or bridge.spu_tracks(),
        spu_es = legacy_spu_es(),
        message = result.message,
        hint = result.hint,
        reference = result.reference,
        cancelled = result.cancelled == true,
        reused = result.reused == true,
        out_dir = result.out_dir,
        fallback = result.fallback == true,
        warnings = result.warnings or {},
        pid = job and job:pid() or nil,
        args = job and job.args or nil,
        version = bridge.VERSION,
        vlc = vlc.misc.version and vlc.misc.version() or nil,
    }
    local line = bridge.json_encode(plain)
    print("SUBPLUG-RESULT " .. line)
    if options.report then
        local f = io.open(options.report, "ab")
        if f then
            f:write(line, "\n")
            f:close()
        end
    end
end

local last_text = nil
local ui = {
    update = function(_, text)
        if text ~= last_text then
            log(text)
            last_text = text
        end
    end,
    should_stop = function()
        local limit = tonumber(options.stop_after)
        return limit ~= nil and (vlc.misc.mdate() - started) / 1e6 >= limit
    end,
}

while not bridge.should_die() do
    local P = bridge.player()
    local item = P and P.item and P.item()
    local uri = item and item:uri()
    if uri and not handled[uri] then
        handled[uri] = true
        started = vlc.misc.mdate()
        local result = bridge.generate_for_current(ui, {
            overwrite = options.overwrite == true,
            use_existing = options.overwrite ~= true,
        })
        if result.ok then
            log("showing " .. tostring(result.subtitle))
        else
            log("failed: " .. tostring(result.message))
        end
        report(result)
        if options.quit then
            vlc.misc.quit()
            break
        end
        if options.play then
            vlc.playlist.play()
        end
    end
    bridge.sleep(0.1)
end
