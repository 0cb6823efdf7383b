<?php
/**
 * The plugin's own user meta (userrelay_versions, userrelay_modified), written in one statement.
 *
 * WordPress's update_user_meta() asks the database whether the key exists before every write,
 * and a save writes both keys: four round trips at the end of a visitor's request. The user's meta is in
 * the cache by then (the snapshot and the applier load the user), so whether the key exists is
 * known; one UPDATE or one INSERT writes it, and the cache is updated in place. Only keys no
 * other code writes are written this way: no other plugin's hooks are owed a call for them.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Writes the plugin's bookkeeping meta.
 */
final class UserRelay_Bookkeeping_Meta {

	/**
	 * Sets a bookkeeping key of a user to $value (one row per key).
	 *
	 * @param int    $user_id User id.
	 * @param string $key     userrelay_versions or userrelay_modified.
	 * @param string $value   The value, unslashed.
	 */
	public static function write( int $user_id, string $key, string $value ): void {
		global $wpdb;
		if ( metadata_exists( 'user', $user_id, $key ) ) {
			$wpdb->query( $wpdb->prepare( "UPDATE {$wpdb->usermeta} SET meta_value = %s WHERE user_id = %d AND meta_key = %s", $value, $user_id, $key ) );
		} else {
			$wpdb->query( $wpdb->prepare( "INSERT INTO {$wpdb->usermeta} (user_id, meta_key, meta_value) VALUES (%d, %s, %s)", $user_id, $key, $value ) );
		}
		$cache = wp_cache_get( $user_id, 'user_meta' );
		if ( is_array( $cache ) ) {
			$cache[ $key ] = array( $value );
			wp_cache_set( $user_id, $cache, 'user_meta' );
		}
	}
}
